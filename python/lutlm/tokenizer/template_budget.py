"""The budgets of one chat-template render: time, and the size of what it builds.

Templates come with model files and run on request data: a broken or hostile one must fail
its request with a clear error, not hang the thread that renders it or fill its memory.
`BudgetedEnvironment` is jinja2's immutable sandbox with its hooks checking the budgets of
the render in progress (`render_within_budget`); a template over one raises `OverBudget`.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Generous for real templates, which render a conversation in about a millisecond and
# produce a few times its size.
TEMPLATE_SECONDS = 2.0  # per render, plus TEMPLATE_SECONDS_PER_MB of input
TEMPLATE_SECONDS_PER_MB = 1.0
TEMPLATE_MIN_SIZE = 4 * 2**20  # characters of output, items of any string or list built
TEMPLATE_SIZE_PER_INPUT = 8  # ... or this many times the input's characters when larger
_MAX_INT_BITS = 1 << 16  # integers built by ** and * (str() refuses beyond ~14k bits anyway)


class OverBudget(Exception):
    """A render went over one of its budgets; the message says which."""


@dataclass(slots=True)
class _Budget:
    seconds: float
    size: int
    deadline: float


# The render in progress in this thread (context), read by the environment's hooks. None
# outside a render: compile-time constant folding then gets the minimum size budget.
_budget: ContextVar[_Budget | None] = ContextVar("lutlm_template_budget", default=None)


def _size_budget() -> int:
    b = _budget.get()
    return TEMPLATE_MIN_SIZE if b is None else b.size


def _check_size(n: int, what: str) -> None:
    if n > _size_budget():
        raise OverBudget(
            f"would build {what} of {n} items, over its size budget of {_size_budget()}"
        )


def _check_time() -> None:
    b = _budget.get()
    if b is not None and time.monotonic() > b.deadline:
        raise OverBudget(f"ran past its time budget of {b.seconds:.3g} s")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_ints(args: Iterable[Any], what: str) -> None:
    """Widths and counts: a value past the size budget would build something past it."""
    for a in args:
        n = _int(a)
        if n is not None and n > _size_budget():
            raise OverBudget(f"asked for {what}({n}), over its size budget of {_size_budget()}")


_PERCENT_WIDTHS = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_format(fmt: str, args: tuple, style: str) -> None:
    """The widths written in a %- or {}-format string, and the arguments that give widths
    (`%*d`, `{:{}}`) when it has such fields."""
    if style == "%":
        widths = [w for m in _PERCENT_WIDTHS.finditer(fmt) for w in m.groups() if w]
        nested = "*" in widths
    else:
        widths = [w for f in re.findall(r"\{[^{}]*\}", fmt) for w in re.findall(r"\d+", f)]
        nested = re.search(r"\{[^{}]*:[^{}]*\{", fmt) is not None
    for w in widths:
        if w != "*" and (len(w) > 9 or int(w) > _size_budget()):
            raise OverBudget(
                f"asked for a format width of {w}, over its size budget of {_size_budget()}"
            )
    if nested:
        _check_ints(args, "a format width ")


def _range(*args: int) -> range:
    r = range(*args)
    _check_size(len(r), f"range({', '.join(map(repr, args))})")
    return r


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, list, tuple, dict)) else None


def _deep_size(value: Any) -> int:
    """Items of a string or list, a list's strings counted by their characters: a list of
    one long string repeated is as long as its text once printed."""
    if isinstance(value, (list, tuple)):
        return sum(_sized(v) or 1 for v in value)
    return _sized(value) or 1


def _check_binop(op: str, left: Any, right: Any) -> None:
    """Refuse results past the budgets before computing them: one * or ** can ask for
    gigabytes in a single C call, which no time check can interrupt."""
    a, b = _int(left), _int(right)
    if op == "**" and a is not None and b is not None and b > 0 and abs(a) > 1:
        if b * abs(a).bit_length() > _MAX_INT_BITS:
            raise OverBudget(f"would compute {a} ** {b}, over its budget of {_MAX_INT_BITS} bits")
    elif op == "*" and a is not None and b is not None:
        if a.bit_length() + b.bit_length() > _MAX_INT_BITS:
            raise OverBudget(f"would compute a product over its budget of {_MAX_INT_BITS} bits")
    elif op == "*":
        for seq, n in ((left, b), (right, a)):
            if n is not None and _sized(seq) is not None:
                _check_size(_deep_size(seq) * n, f"a {type(seq).__name__} * {n}")
    elif op == "+":
        la, lb = _sized(left), _sized(right)
        if la is not None and lb is not None:
            _check_size(la + lb, "a sum")
    elif op == "%" and isinstance(left, str):
        _check_format(left, right if isinstance(right, tuple) else (right,), "%")


# Filters and str methods that can build much more than they are given. Widths and counts
# are checked against the size budget, and the strings they repeat against how often.
_WIDTH_FILTERS = ("center", "indent", "wordwrap", "batch", "slice")
_WIDTH_METHODS = ("ljust", "rjust", "center", "zfill", "expandtabs")


def _check_filter(name: str, a: dict[str, Any]) -> dict[str, Any]:
    """Checks a filter call by its bound arguments; the arguments to call it with (an
    iterable that join or sum consume is listed first, to be measured)."""
    if name in _WIDTH_FILTERS:  # not the value filtered, which may be any number
        _check_ints([v for k, v in a.items() if k not in ("value", "s")], name)
    text, width, wrap = a.get("s"), a.get("width"), a.get("wrapstring")
    if name in ("batch", "slice") and a.get("fill_with") is not None:
        count = a.get("linecount", a.get("slices"))
        if _int(count) is not None:
            _check_size(count * _deep_size(a["fill_with"]), f"a {name} with fill_with")
    elif name in ("join", "sum"):
        key = "value" if name == "join" else "iterable"
        items = a[key] = list(a[key])
        sep = a.get("d", "")
        total = sum(_sized(v) or 0 for v in items)
        if isinstance(sep, str):
            total += len(sep) * max(0, len(items) - 1)
        _check_size(total, f"a {name}")
    elif name == "replace" and all(isinstance(v, str) for v in (text, a["old"], a["new"])):
        _check_replace(text, a["old"], a["new"])
    elif name == "indent" and isinstance(text, str) and isinstance(width, str):
        _check_size(len(text) + (text.count("\n") + 1) * len(width), "an indent")
    elif name == "wordwrap" and isinstance(text, str) and isinstance(wrap, str):
        _check_size((len(text) + 1) * (len(wrap) + 1), "a wordwrap")
    elif name == "format" and isinstance(a.get("value"), str):
        _check_format(a["value"], (*a.get("args", ()), *a.get("kwargs", {}).values()), "%")
    return a


def _budgeted_filter(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(f)

    @functools.wraps(f)  # keeps jinja's pass_environment/pass_eval_context marks
    def checked(*args: Any, **kwargs: Any) -> Any:
        _check_time()  # map and select call filters once per item, no loop of the template's
        bound = signature.bind(*args, **kwargs)  # a TypeError as the filter would give
        bound.arguments.update(_check_filter(name, dict(bound.arguments)))
        return f(*bound.args, **bound.kwargs)

    return checked


def _check_replace(s: str, old: str, new: str) -> None:
    count = s.count(old) if old else len(s) + 1
    _check_size(len(s) + count * max(0, len(new) - len(old)), "a replace")


def _check_method(method: Any, args: tuple, kwargs: dict) -> tuple:
    """Checks a call of a str method that can build a large string; the arguments to call
    it with (join's iterable, listed to be measured)."""
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str):
        return args
    name = getattr(method, "__name__", "")
    if name in _WIDTH_METHODS:
        _check_ints([*args, *kwargs.values()], name)
    elif name == "replace" and len(args) >= 2:
        if isinstance(args[0], str) and isinstance(args[1], str):
            _check_replace(owner, args[0], args[1])
    elif name == "join" and len(args) == 1:
        items = list(args[0])
        total = sum(_sized(i) or 0 for i in items) + len(owner) * max(0, len(items) - 1)
        _check_size(total, "a join")
        args = (items,)
    return args


def _budgeted_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    """What a template's for loop iterates: the iterable, with the time checked before
    each item."""
    for item in iterable:
        _check_time()
        yield item


class _BudgetedCodeGenerator(CodeGenerator):
    """Checks the time budget at every iteration of every for loop, and compiles `a ~ b`
    to a size-checked join.

    A loop is the only way a template repeats work without a call (which the
    environment checks), so nested loops are what can run for hours; `~` is no binary
    operator that the sandbox can intercept, and doubling a string with it fills memory
    in a few steps.
    """

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        # Before the generator collects the template's imports: the wrapper is one.
        for loop in list(node.find_all(nodes.For)):
            loop.iter = nodes.Call(
                nodes.ImportedName(f"{__name__}._budgeted_iter"),
                [loop.iter],
                [],
                None,
                None,
                lineno=loop.iter.lineno,
            )
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat(")
        super().visit_Concat(node, frame)
        self.write(")")


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with calls, operators, ranges, ~ and (through _BudgetedCodeGenerator)
    loop iterations checked against the budgets of the render in progress.

    The time is checked where a template can repeat work (each loop iteration and call),
    not by a signal: the server renders in worker threads, and signals reach only the main
    thread. Sizes are checked before a string or list is built wherever one operation can
    build a large one (*, **, +, %, ~, widths, join, replace), since no time check can
    interrupt a single C call that fills gigabytes.
    """

    intercepted_binops = frozenset({"+", "*", "**", "%"})
    code_generator_class = _BudgetedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name in (*_WIDTH_FILTERS, "join", "sum", "replace", "format"):
            self.filters[name] = _budgeted_filter(name, self.filters[name])
        self.globals["range"] = _range

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+" and type(left) is str and type(right) is str:  # most of them
            if len(left) + len(right) > _size_budget():
                _check_size(len(left) + len(right), "a sum")
            return left + right
        _check_binop(operator, left, right)
        return self.binop_table[operator](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_time()
        args = _check_method(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        n = _sized(result)
        if n is not None:
            _check_size(n, "the result of " + getattr(__obj, "__name__", "a call") + "()")
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format(fmt, (*args, *kwargs.values()), "{}")
            return wrapper(*args, **kwargs)

        return checked

    def checked_concat(self, text: str) -> str:
        _check_size(len(text), "a ~ concatenation")
        return text


def _input_size(*values: Any) -> int:
    """Characters of strings in nested lists and dicts (request data), counted without
    recursion: the data may nest deeper than Python recurses."""
    total, stack = 0, list(values)
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, Mapping):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return total


def render_within_budget(template: jinja2.Template, variables: dict[str, Any]) -> str:
    """Render under the time and size budgets.

    Raises:
        OverBudget: a budget ran out.
        RecursionError, MemoryError, jinja2.TemplateError, ...: what the template raised.
    """
    size = _input_size(variables)
    seconds = TEMPLATE_SECONDS + TEMPLATE_SECONDS_PER_MB * size / 1e6
    budget = _Budget(
        seconds, max(TEMPLATE_MIN_SIZE, TEMPLATE_SIZE_PER_INPUT * size), time.monotonic() + seconds
    )
    token = _budget.set(budget)
    try:
        out, n = [], 0
        for chunk in template.generate(**variables):
            n += len(chunk)
            if n > budget.size:
                raise OverBudget(f"produced more than its size budget of {budget.size} characters")
            out.append(chunk)
        return "".join(out)
    finally:
        _budget.reset(token)
