"""Prompt-lookup decoding: decode tokens/s with and without drafts, same run.

For each prompt, greedy generation runs with drafts off and on, alternately, on one
engine (the fastest of --repeat runs of each counts), and the decode phase is timed:
from the step that produced the first token to the last step (prefill is not timed, so
prefix-cache hits of later runs change nothing). The tokens must be identical (the bench
stops otherwise). Reported: decode tokens/s of both (fastest run), their ratio, the
median ratio of back-to-back pairs, drafted and accepted tokens, and tokens per step.

    python bench/prompt_lookup.py [--model FILE] [--act-bits 16] [--k 16] [--threads 2]
    python bench/prompt_lookup.py --step-cost   # forward time of a T-token verify step

--step-cost times one sequence's forward pass over T new tokens (all with logits, as a
verification step computes them) after 300 tokens of context, relative to T = 1: what a
step with T - 1 drafts costs.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from lutlm import _C
from lutlm.engine.sampling_params import SamplingParams
from lutlm.llm import LLM
from lutlm.model import ForwardBatch

C_FUNCTION = """int sum_positive(const int *values, int count) {
    int total = 0;
    for (int i = 0; i < count; i++) {
        if (values[i] > 0) {
            total += values[i];
        }
    }
    return total;
}"""

IR_FUNCTION = """define dso_local i32 @sum_positive(i32* nocapture noundef readonly %values, \
i32 noundef %count) local_unnamed_addr #0 {
entry:
  %cmp11 = icmp sgt i32 %count, 0
  br i1 %cmp11, label %for.body.preheader, label %for.cond.cleanup

for.body.preheader:                               ; preds = %entry
  %wide.trip.count = zext i32 %count to i64
  br label %for.body

for.cond.cleanup:                                 ; preds = %for.body, %entry
  %total.0.lcssa = phi i32 [ 0, %entry ], [ %spec.select, %for.body ]
  ret i32 %total.0.lcssa

for.body:                                         ; preds = %for.body.preheader, %for.body
  %indvars.iv = phi i64 [ 0, %for.body.preheader ], [ %indvars.iv.next, %for.body ]
  %total.012 = phi i32 [ 0, %for.body.preheader ], [ %spec.select, %for.body ]
  %arrayidx = getelementptr inbounds i32, i32* %values, i64 %indvars.iv
  %0 = load i32, i32* %arrayidx, align 4
  %cmp1 = icmp sgt i32 %0, 0
  %add = select i1 %cmp1, i32 %0, i32 0
  %spec.select = add nuw nsw i32 %add, %total.012
  %indvars.iv.next = add nuw nsw i64 %indvars.iv, 1
  %exitcond.not = icmp eq i64 %indvars.iv.next, %wide.trip.count
  br i1 %exitcond.not, label %for.cond.cleanup, label %for.body
}"""

PROMPTS = {
    "rewrite: C, rename": (
        "rewrite",
        "Repeat this C function with the variable `total` renamed to `sum` and nothing "
        f"else changed. Answer with the code only.\n\n{C_FUNCTION}",
    ),
    "rewrite: LLVM IR": (
        "rewrite",
        f"Re-emit this LLVM IR function unchanged. Answer with the IR only.\n\n{IR_FUNCTION}",
    ),
    "free: story": ("free", "Write a short story about a lighthouse keeper and a storm."),
    "free: explain": ("free", "Explain how a compiler turns source code into machine code."),
}


def timed_decode(llm: LLM, ids: list[int], params: SamplingParams) -> tuple[list[int], float]:
    """Greedy tokens and the seconds of the decode phase (after the first token)."""
    eng = llm.engine
    rid = eng.add_request(ids, params)
    while not any(o.new_token_ids for o in eng.step()):
        pass
    t0 = time.perf_counter()
    while eng.has_unfinished():
        eng.step()
    seconds = time.perf_counter() - t0
    (out,) = eng.pop_finished()
    assert out.request_id == rid
    return out.token_ids, seconds


def step_cost(llm: LLM, context: int = 300, sizes=(1, 2, 3, 5, 9, 17), repeat: int = 9) -> None:
    """Median forward time of T new tokens of one sequence, every row with logits."""
    model, cache, bs = llm.engine.model, llm.engine.cache, llm.engine.block_size
    ids = np.random.default_rng(0).integers(100, 20000, context + max(sizes)).tolist()
    table = list(range(-(-(context + max(sizes)) // bs)))
    model.forward(ForwardBatch.single(ids[:context], 0, table, bs), cache)
    base = None
    print(f"{'T':>3} {'ms':>8} {'x T=1':>6}")
    for t in sizes:
        batch = ForwardBatch.single(ids[context : context + t], context, table, bs, True)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            model.forward(batch, cache)
            times.append(time.perf_counter() - t0)
        ms = float(np.median(times)) * 1e3
        base = base or ms
        print(f"{t:>3} {ms:>8.2f} {ms / base:>5.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: SmolLM2-135M-Instruct")
    ap.add_argument("--act-bits", type=int, default=16)
    ap.add_argument("--k", type=int, default=16, help="prompt_lookup (max drafts per step)")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=4, help="runs per mode; the fastest counts")
    ap.add_argument("--step-cost", action="store_true", help="time verify steps of T tokens")
    args = ap.parse_args()
    if args.threads:
        _C.set_num_threads(args.threads)
    llm = LLM(args.model, act_bits=args.act_bits)
    print(
        f"# {platform.processor() or platform.machine()}, {_C.get_num_threads()} threads, "
        f"isa {_C.cpu_info()['isa']}, act_bits {args.act_bits}, k {args.k}"
    )
    if args.step_cost:
        step_cost(llm)
        return
    print(
        f"{'prompt':<20} {'tokens':>6} {'plain tok/s':>11} {'lookup tok/s':>12} {'ratio':>6} "
        f"{'paired':>6} {'drafted':>7} {'accepted':>8} {'tok/step':>8}"
    )
    for name, (_, text) in PROMPTS.items():
        chat = llm.tokenizer.apply_chat_template([{"role": "user", "content": text}])
        ids = llm.tokenizer.encode(chat, add_special_tokens=False)
        runs: dict[int, list[tuple]] = {0: [], args.k: []}
        for _ in range(args.repeat):  # interleaved, so drift hits both modes alike
            for k in runs:
                params = SamplingParams(max_tokens=args.max_tokens, temperature=0, prompt_lookup=k)
                d0, a0 = llm.engine.num_draft_tokens, llm.engine.num_accepted_tokens
                tokens, secs = timed_decode(llm, ids, params)
                stats = (llm.engine.num_draft_tokens - d0, llm.engine.num_accepted_tokens - a0)
                runs[k].append((tokens, secs, stats))
        if any(r[0] != runs[0][0][0] for rs in runs.values() for r in rs):
            raise SystemExit(f"{name}: tokens differ with prompt lookup (a bug)")
        s_plain = min(r[1] for r in runs[0])
        s_pl = min(r[1] for r in runs[args.k])
        # The median over the repeats of each back-to-back pair's ratio: less sensitive
        # to a lucky run than the ratio of the fastest runs.
        pairs = zip(runs[0], runs[args.k], strict=True)
        paired = float(np.median([a[1] / b[1] for a, b in pairs]))
        drafted, accepted = runs[args.k][0][2]
        n = len(runs[0][0][0]) - 1  # decode-phase tokens
        steps = n - accepted  # each step gives one token plus its accepted drafts
        print(
            f"{name:<20} {n:>6} {n / s_plain:>11.1f} {n / s_pl:>12.1f} "
            f"{s_plain / s_pl:>5.2f}x {paired:>5.2f}x {drafted:>7} {accepted:>8} "
            f"{n / max(steps, 1):>8.2f}"
        )


if __name__ == "__main__":
    main()
