"""Chat templates: jinja2 sources that turn a conversation into the model's prompt text.

They render in jinja2's sandbox (template_budget.py: time and size budgets) with the globals
and filters HF templates expect (`raise_exception`, `strftime_now`, a `tojson` that leaves
<, >, & and ' alone, `{% generation %}`). Every failure is a ValueError naming the tokenizer
and the template.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lutlm.tokenizer.template_budget import BudgetedEnvironment, OverBudget, render_within_budget


def render_chat_template(
    name: str,
    chat_templates: Mapping[str, str],
    variables: dict[str, Any],
    chat_template: str | None = None,
) -> str:
    """Render one of `chat_templates` (None: "default"), or `chat_template` itself when it
    is a jinja2 source, with `variables` (see `Tokenizer.apply_chat_template`).

    Args:
        name: the tokenizer's name, which starts every error message.
        chat_templates: the model's templates by name.
        variables: the template's variables (messages, add_generation_prompt, ...).
        chat_template: a template name, a jinja2 source, or None.

    Raises:
        ValueError: no such template, or it failed or went over a budget.
    """
    if chat_template is None or chat_template in chat_templates:
        source = chat_templates.get(chat_template or "default")
        if source is None:
            have = f"; it has: {', '.join(chat_templates)}" if chat_templates else ""
            raise ValueError(
                f"{name}: the model has no chat template named "
                f"{chat_template or 'default'!r}{have}; pass chat_template= a jinja2 "
                "template or format the prompt yourself"
            )
    elif "{" in chat_template:
        source = chat_template
    else:
        raise ValueError(f"{name}: no chat template named {chat_template!r}")
    which = (
        "the chat_template argument"
        if source is chat_template
        else f"chat template {chat_template or 'default'!r}"
    )
    try:
        template = _compile_template(source)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from e
    try:
        return render_within_budget(template, variables)
    except OverBudget as e:
        raise ValueError(f"{name}: {which} {e}") from None
    except RecursionError:
        raise ValueError(
            f"{name}: {which} recursed too deeply (a macro that calls itself without end?)"
        ) from None
    except MemoryError:
        raise ValueError(f"{name}: {which} ran out of memory") from None
    except jinja2.TemplateError as e:
        raise ValueError(f"{name}: chat template failed: {e}") from e
    except Exception as e:  # Python's errors from the template's expressions
        raise ValueError(f"{name}: chat template failed: {type(e).__name__}: {e}") from e


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
) -> str:
    # jinja2's own tojson escapes <, >, & and ' for HTML; prompts want them as they are.
    return json.dumps(
        value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii
    )


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` (marks assistant text for training masks in HF):
    renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


@lru_cache(maxsize=1)
def _template_environment() -> ImmutableSandboxedEnvironment:
    env = BudgetedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.loopcontrols", _GenerationBlock],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=32)
def _compile_template(source: str) -> jinja2.Template:
    try:
        return _template_environment().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"chat template does not parse: {e}") from e
    except RecursionError as e:  # nesting deeper than the parser recurses
        raise ValueError("chat template does not parse: it nests too deeply") from e
