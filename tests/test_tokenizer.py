"""lutlm.tokenizer against independent references.

- The real SmolLM2 GGUF (byte-level BPE) against transformers reading the same file: ids,
  decoded text and the rendered chat template must be identical.
- Sentencepiece models trained here (BPE and unigram), as an HF directory (tokenizer.model) and
  as a GGUF `llama` vocabulary, against sentencepiece itself.
- Byte-level BPE tokenizers trained here with `tokenizers`, as an HF directory (tokenizer.json
  plus configs) and as GGUF `gpt2` vocabularies under every pre-tokenizer name we map.
- Streaming: incremental decoding concatenates to decode(all ids), emitting no broken character.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
from pathlib import Path

import pytest

from lutlm.tokenizer import BYTE_LEVEL_SPLITS, IncrementalDecoder, Tokenizer

from .model_assets import smollm2_path

TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "It's a test: they're here, we'll see, I'd've thought so.",
    "def f(x):\n\tif x > 1:\n\t\treturn x ** 2  # square\n\n\n    return None\r\n",
    'int main(void) { printf("%d\\n", 42); return 0; }',
    "  leading and trailing spaces   ",
    "Numbers: 3.14159, 1,000,000 and x86_64 / aarch64 v8.2",
    "naïve café — “quotes” Zażółć gęślą jaźń",
    "日本語のテキストと中文和한국어 mixed with English",
    "emoji: 😀👍🏽🇯🇵 👨‍👩‍👧 ✨",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "special tokens inside text: a<|endoftext|>b <|im_end|>c",
    "",
    " ",
    "\n\n",
]
# Multi-byte characters that byte-level BPE splits across tokens.
STREAM_TEXT = "流式解码测试：😀🤖👍🏽🇯🇵 日本語のテキスト 한국어 🧪🧬🔬 — ½ ∑∫√ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 " * 4
CHAT = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": 'What is 2+2? Answer with <b>one</b> word & "quote" it.'},
]


def _need(module: str):
    """An optional test dependency (the `test` extra), or skip; fail under CI's
    LUTLM_REQUIRE_MODEL_TESTS=1."""
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed: pip install '.[test]'"
        if os.environ.get("LUTLM_REQUIRE_MODEL_TESTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return importlib.import_module(module)


def _stream(tokenizer: Tokenizer, ids: list[int], prompt_ids: list[int] = ()) -> list[str]:
    decoder = tokenizer.incremental_decoder(prompt_ids)
    chunks = [decoder.add(i) for i in ids]
    return [*chunks, decoder.flush()]


# ------------------------------------------------------------------ SmolLM2 GGUF vs transformers


@pytest.fixture(scope="module")
def smollm2() -> Tokenizer:
    return Tokenizer.from_gguf(smollm2_path())


@pytest.fixture(scope="module")
def smollm2_reference():
    path = smollm2_path()
    return _need("transformers").AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_smollm2_metadata(smollm2: Tokenizer) -> None:
    assert smollm2.vocab_size == 49152
    assert smollm2.bos_token_id == 1  # <|im_start|>
    assert smollm2.eos_token_ids == {2, 0}  # <|im_end|> from the file, <|endoftext|> by text
    assert smollm2.chat_template and "<|im_start|>" in smollm2.chat_template
    assert smollm2.encode("<|im_start|>", add_special_tokens=True) == [1]  # add_bos_token false


@pytest.mark.parametrize("text", TEXTS)
def test_smollm2_encode_decode_match_transformers(smollm2, smollm2_reference, text: str) -> None:
    ids = smollm2.encode(text)
    assert ids == smollm2_reference.encode(text)
    for skip in (True, False):
        assert smollm2.decode(ids, skip) == smollm2_reference.decode(ids, skip_special_tokens=skip)
    assert smollm2.decode(ids, skip_special_tokens=False) == text


def test_smollm2_isolates_every_numeric_character(smollm2, smollm2_reference) -> None:
    """SmolLM2's own tokenizer.json splits off every numeric character (a Digits pre-tokenizer
    before the GPT-2 split), as llama.cpp's "smollm" pre-tokenizer does. transformers' GGUF loader
    uses the GPT-2 split alone, which differs on numerics outside ASCII after a space (" ½"):
    compare with its vocabulary under the published pre-tokenizer."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import pre_tokenizers

    published = Backend.from_str(smollm2_reference.backend_tokenizer.to_str())
    published.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(False)]
    )
    for text in [*TEXTS, "½ cup, x² + y², Ⅻ o'clock, ٣ and ३, 1/2 ½"]:
        assert smollm2.encode(text) == published.encode(text).ids


def test_smollm2_special_tokens_are_whole(smollm2: Tokenizer) -> None:
    ids = smollm2.encode("x<|im_start|>user<|im_end|>")
    assert 1 in ids and 2 in ids
    assert smollm2.decode(ids) == "xuser"


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_chat_template_matches_transformers(
    smollm2, smollm2_reference, add_generation_prompt: bool
) -> None:
    for messages in (CHAT, CHAT[1:]):  # without a system message the template adds its own
        ours = smollm2.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        theirs = smollm2_reference.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        assert ours == theirs
    assert ours.endswith("<|im_start|>assistant\n") == add_generation_prompt


def test_smollm2_incremental_decoding(smollm2: Tokenizer) -> None:
    ids = smollm2.encode(STREAM_TEXT)
    chunks = _stream(smollm2, ids)
    assert "".join(chunks) == smollm2.decode(ids) == STREAM_TEXT
    assert all("\ufffd" not in c for c in chunks)
    assert chunks.count("") > 10  # characters really were split across tokens
    # After a prompt: only the new text comes out.
    prompt = smollm2.encode("<|im_start|>assistant\nSure: ")
    assert "".join(_stream(smollm2, ids, prompt)) == STREAM_TEXT


# ------------------------------------------------------------------ sentencepiece models

SP_CORPUS = [
    "Hello world, this is a test of the tokenizer and its pieces.",
    "The quick brown fox jumps over the lazy dog. Now, New York, North.",
    "def main():\n    return 42  # the answer",
    "It's 3.14 and 1000 items; they're fine! Numbers 0123456789.",
    "日本語のテキストも少し入れます。中文和한국어",
    "Zażółć gęślą jaźń, naïve café.",
] * 30
# Texts made of the corpus' characters (sentencepiece renders unknown ones its own way).
SP_TEXTS = [
    "Hello world",
    "Hello  world!\nNew York   fox",
    "  leading spaces and trailing  ",
    "The lazy dog's 42 items.",
    "日本語のテキスト",
    "",
    " ",
    "a\n\nb",
    "x  y   z",
]


def _train_sentencepiece(**options) -> bytes:
    spm = _need("sentencepiece")
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SP_CORPUS),
        model_writer=out,
        vocab_size=400,
        hard_vocab_limit=False,
        minloglevel=2,
        **options,
    )
    return out.getvalue()


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
@pytest.mark.parametrize(
    "options",
    [
        {},  # nmt_nfkc normalization, extra whitespace removed
        {"normalization_rule_name": "identity", "remove_extra_whitespaces": False},
        {"byte_fallback": True},
        {"byte_fallback": True, "add_dummy_prefix": False},
    ],
    ids=["default", "identity", "byte_fallback", "no_prefix"],
)
def test_sentencepiece_directory_matches_sentencepiece(tmp_path, model_type, options) -> None:
    sentencepiece = _need("sentencepiece")

    proto = _train_sentencepiece(model_type=model_type, **options)
    (tmp_path / "tokenizer.model").write_bytes(proto)
    reference = sentencepiece.SentencePieceProcessor(model_proto=proto)
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.vocab_size == reference.get_piece_size()
    assert (tok.bos_token_id, tok.eos_token_ids) == (reference.bos_id(), {reference.eos_id()})
    for text in SP_TEXTS:
        ids = reference.encode(text)
        assert tok.encode(text, add_special_tokens=False) == ids, text
        assert tok.encode(text) == [reference.bos_id(), *ids]  # add_bos_token by default
        assert tok.decode(ids) == reference.decode(ids)
    if options.get("byte_fallback"):  # characters outside the vocabulary go through bytes
        ids = tok.encode(STREAM_TEXT, add_special_tokens=False)
        assert ids == reference.encode(STREAM_TEXT)
        text = reference.decode(ids)
        assert tok.decode(ids) == text
        chunks = _stream(tok, ids)
        assert "".join(chunks) == text and all("\ufffd" not in c for c in chunks)


def test_sentencepiece_directory_configuration(tmp_path) -> None:
    sentencepiece = _need("sentencepiece")

    proto = _train_sentencepiece(model_type="bpe", byte_fallback=True)
    (tmp_path / "tokenizer.model").write_bytes(proto)
    reference = sentencepiece.SentencePieceProcessor(model_proto=proto)
    size = reference.get_piece_size()
    config = {
        "add_bos_token": False,
        "add_eos_token": True,
        "added_tokens_decoder": {str(size): {"content": "<|im_start|>", "special": True}},
        "chat_template": [
            {"name": "default", "template": "{{ eos_token }}"},
            {"name": "rag", "template": "{{ documents | length }}"},
        ],
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, size]}))
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.vocab_size == size + 1 and tok.eos_token_ids == {2, size}
    assert tok.encode("Hello<|im_start|>") == [*reference.encode("Hello"), size, 2]
    assert tok.apply_chat_template([]) == "</s>"
    assert tok.apply_chat_template([], chat_template="rag", documents=[1, 2]) == "2"
    (tmp_path / "chat_template.jinja").write_text("{{ messages | length }}")  # takes precedence
    assert Tokenizer.from_pretrained(tmp_path).apply_chat_template(CHAT) == "2"
    config["added_tokens_decoder"] = {str(size + 5): {"content": "<gap>"}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="tokenizer_config.json: added token '<gap>' has id"):
        Tokenizer.from_pretrained(tmp_path)


def _write_gguf(path: Path, values: dict) -> Path:
    """A GGUF file holding only metadata."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in values.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def llama_gguf(tmp_path_factory):
    """A GGUF `llama` vocabulary from a sentencepiece BPE model set up like Llama's
    (byte fallback, no normalization), with a control and a user-defined token."""
    sentencepiece = _need("sentencepiece")

    from lutlm.tokenizer.sentencepiece_vocab import read_sentencepiece_model

    proto = _train_sentencepiece(
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        control_symbols=["<|im_end|>"],
        user_defined_symbols=["<tool>"],
    )
    root = tmp_path_factory.mktemp("llama_gguf")
    (root / "tokenizer.model").write_bytes(proto)
    vocab = read_sentencepiece_model(root / "tokenizer.model")
    path = _write_gguf(
        root / "tok.gguf",
        {
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": vocab.pieces,
            "tokenizer.ggml.scores": vocab.scores,
            "tokenizer.ggml.token_type": vocab.types,
            "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}] "
            "{{ m.content }}{{ eos_token }}{% endfor %}",
            "tokenizer.chat_template.tool_use": "{{ tools | tojson }}",
        },
    )
    return path, sentencepiece.SentencePieceProcessor(model_proto=proto)


def test_gguf_llama_matches_sentencepiece(llama_gguf) -> None:
    path, reference = llama_gguf
    tok = Tokenizer.from_gguf(path)
    end = reference.piece_to_id("<|im_end|>")
    assert tok.bos_token_id == 1 and tok.eos_token_ids == {2, end}  # <|im_end|> ends a turn
    for text in [*SP_TEXTS, STREAM_TEXT]:
        ids = reference.encode(text)
        assert tok.encode(text) == [1, *ids], text
        assert tok.decode(ids) == reference.decode(ids)
    # A user-defined token is kept whole, as in sentencepiece; the text after it gets the dummy
    # prefix like a new text, as in llama.cpp.
    tool = reference.piece_to_id("<tool>")
    ids = [*reference.encode("call "), tool, *reference.encode(" now")]
    assert tok.encode("call <tool> now", add_special_tokens=False) == ids
    assert tok.decode(ids) == "call <tool>  now"
    # Control tokens are recognised in text (sentencepiece itself would split them) and are
    # dropped by decode; the dummy prefix follows each of them, as in llama.cpp.
    ids = tok.encode("Hi<|im_end|>Hi", add_special_tokens=False)
    assert ids == [*reference.encode("Hi"), end, *reference.encode("Hi")]
    assert tok.decode(ids) == "Hi Hi"
    assert tok.decode(ids, skip_special_tokens=False) == "Hi<|im_end|> Hi"
    chunks = _stream(tok, tok.encode(STREAM_TEXT))
    assert "".join(chunks) == STREAM_TEXT and all("\ufffd" not in c for c in chunks)


def test_gguf_llama_chat_templates(llama_gguf) -> None:
    tok = Tokenizer.from_gguf(llama_gguf[0])
    assert tok.apply_chat_template(CHAT[1:]) == f"<s>[user] {CHAT[1]['content']}</s>"
    tools = [{"name": "add", "description": "a < b & c"}]
    rendered = tok.apply_chat_template([], chat_template="tool_use", tools=tools)
    assert json.loads(rendered) == tools and "<" in rendered  # not HTML-escaped
    with pytest.raises(ValueError, match="no chat template named 'rag'"):
        tok.apply_chat_template([], chat_template="rag")


def test_gguf_llama_save_pretrained_round_trip(llama_gguf, tmp_path) -> None:
    """A sentencepiece GGUF tokenizer written as an HF directory reads back the same
    (SmolLM2's byte-level BPE is checked in test_quantize.py)."""
    ref = Tokenizer.from_gguf(llama_gguf[0])
    ref.save_pretrained(tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path)
    assert (tok.bos_token_id, tok.eos_token_ids) == (ref.bos_token_id, ref.eos_token_ids)
    assert tok.chat_templates == ref.chat_templates and len(tok.chat_templates) == 2
    assert tok.template_tokens == ref.template_tokens
    for text in [*SP_TEXTS, STREAM_TEXT, "call <tool> now", "Hi<|im_end|>Hi"]:
        ids = ref.encode(text)
        assert tok.encode(text) == ids, text
        assert tok.decode(ids, skip_special_tokens=False) == ref.decode(ids, False)
    assert tok.apply_chat_template(CHAT[1:]) == ref.apply_chat_template(CHAT[1:])


# ------------------------------------------------------------------ byte-level BPE trained here


@pytest.fixture(scope="module")
def trained_bpe() -> tuple:
    """A byte-level BPE trained with `tokenizers` (GPT-2 pre-tokenizer) and its special tokens."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(TEXTS * 5 + SP_CORPUS, trainer)
    return backend, specials


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture
def bpe_directory(tmp_path, trained_bpe) -> Path:
    from tokenizers import Tokenizer as Backend
    from tokenizers import processors

    backend = Backend.from_str(trained_bpe[0].to_str())
    backend.post_processor = processors.TemplateProcessing(  # add BOS, as Llama's do
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)]
    )
    backend.save(str(tmp_path / "tokenizer.json"))
    config = {
        "bos_token": "<|im_start|>",
        "eos_token": {"__type": "AddedToken", "content": "<|im_end|>"},
        "add_bos_token": True,
        "chat_template": CHATML,
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 2, "bos_token_id": 1}))
    return tmp_path


def test_byte_level_directory_round_trip(bpe_directory: Path) -> None:
    tok = Tokenizer.from_pretrained(bpe_directory)
    assert tok.bos_token_id == 1 and tok.eos_token_ids == {0, 2}
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids[0] == 1  # add_bos_token
        assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>" + text
    assert tok.encode("a<|im_end|>b", add_special_tokens=False)[1] == 2
    chunks = _stream(tok, tok.encode(STREAM_TEXT))
    assert "".join(chunks) == STREAM_TEXT and all("\ufffd" not in c for c in chunks)
    prompt = tok.apply_chat_template(CHAT)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")


def test_byte_level_directory_matches_transformers(bpe_directory: Path) -> None:
    reference = _need("transformers").AutoTokenizer.from_pretrained(bpe_directory)
    tok = Tokenizer.from_pretrained(bpe_directory)
    for text in TEXTS:
        assert tok.encode(text) == reference.encode(text), text
        ids = tok.encode(text)
        assert tok.decode(ids) == reference.decode(ids, skip_special_tokens=True)
    assert tok.apply_chat_template(CHAT) == reference.apply_chat_template(
        CHAT, tokenize=False, add_generation_prompt=True
    )


# A control token stored as raw text, outside the byte-level alphabet (DeepSeek's BOS).
RAW_CONTROL = "<｜begin▁of▁sentence｜>"


def _byte_level_gguf(path: Path, backend, pre: str, **extra) -> Path:
    model = json.loads(backend.to_str())["model"]
    tokens = [*sorted(model["vocab"], key=model["vocab"].get), RAW_CONTROL]
    types = [3 if t.startswith("<|") or t == RAW_CONTROL else 1 for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    values = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre}
    values |= {"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types}
    return _write_gguf(path, {**values, "tokenizer.ggml.merges": merges, **extra})


@pytest.mark.parametrize("pre", sorted(BYTE_LEVEL_SPLITS))
def test_byte_level_gguf_pre_tokenizers(tmp_path, trained_bpe, pre: str) -> None:
    backend, _ = trained_bpe
    tok = Tokenizer.from_gguf(_byte_level_gguf(tmp_path / "t.gguf", backend, pre))
    for text in TEXTS:
        assert tok.decode(tok.encode(text), skip_special_tokens=False) == text
    assert tok.encode("<|im_end|>") == [2]
    raw = tok.vocab_size - 1
    assert tok.encode(f"a{RAW_CONTROL}b")[1] == raw
    assert (
        tok.decode(tok.encode(f"a{RAW_CONTROL}b"), skip_special_tokens=False) == f"a{RAW_CONTROL}b"
    )
    if pre == "gpt-2":  # our regex against tokenizers' built-in GPT-2 split
        for text in TEXTS:
            assert tok.encode(text) == backend.encode(text).ids


def test_byte_level_gguf_bos_eos(tmp_path, trained_bpe) -> None:
    backend, _ = trained_bpe
    extra = {
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 0,
        "tokenizer.ggml.eot_token_id": 2,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": True,
    }
    tok = Tokenizer.from_gguf(_byte_level_gguf(tmp_path / "t.gguf", backend, "qwen2", **extra))
    assert tok.bos_token_id == 1 and tok.eos_token_ids == {0, 2}
    ids = tok.encode("hi")
    assert ids[0] == 1 and ids[-1] == 0 and tok.decode(ids) == "hi"
    assert tok.encode("hi", add_special_tokens=False) == ids[1:-1]


# ------------------------------------------------------------------ incremental decoder


def test_incremental_decoder_waits_for_whole_characters(smollm2: Tokenizer) -> None:
    ids = smollm2.encode("🤖")
    assert len(ids) > 1  # one character, several byte tokens
    decoder = IncrementalDecoder(smollm2)
    assert [decoder.add(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert decoder.add(ids[-1]) == "🤖"
    decoder.add(ids[0])  # a dangling first byte comes out as U+FFFD only at the end
    assert decoder.flush() == "\ufffd"


# ------------------------------------------------------------------ chat template behaviour


@pytest.fixture
def templated(bpe_directory: Path):
    def make(template: str) -> Tokenizer:
        tok = Tokenizer.from_pretrained(bpe_directory)
        tok.chat_templates = {"default": template}
        return tok

    return make


def test_chat_template_globals(templated) -> None:
    tok = templated(
        "{{ bos_token }}|{{ eos_token }}|{{ strftime_now('%Y') }}|{{ messages|length }}"
    )
    year = __import__("datetime").date.today().year
    assert tok.apply_chat_template(CHAT) == f"<|im_start|>|<|im_end|>|{year}|2"
    failing = templated(
        "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}"
    )
    with pytest.raises(ValueError, match="user first"):
        failing.apply_chat_template(CHAT)


def test_chat_template_is_sandboxed(templated) -> None:
    tok = templated("{{ messages.__class__.__mro__ }}")
    with pytest.raises(ValueError):
        tok.apply_chat_template(CHAT)
    tok = templated("{% set x = [] %}{{ x.append(1) }}")  # immutable: no list mutation
    with pytest.raises(ValueError):
        tok.apply_chat_template(CHAT)


def test_missing_chat_template(tmp_path, trained_bpe) -> None:
    trained_bpe[0].save(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template(CHAT)
    assert (
        tok.apply_chat_template(CHAT, chat_template="{{ messages[1].content }}")
        == CHAT[1]["content"]
    )


# ------------------------------------------------------------------ errors


def test_missing_directory_and_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        Tokenizer.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="no tokenizer.json or tokenizer.model"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no such GGUF file"):
        Tokenizer.from_gguf(tmp_path / "nope.gguf")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("tokenizer.json", b'{"model": ', "tokenizer.json: not a valid tokenizers JSON"),
        ("tokenizer.json", b'{"version": "1.0"}', "tokenizer.json: not a valid tokenizers JSON"),
        ("tokenizer.model", b"\x0a\xff", "tokenizer.model: not a sentencepiece model"),
        ("tokenizer.model", b"not a protobuf at all", "tokenizer.model: "),
        ("tokenizer.model", b"", "tokenizer.model: expected a sentencepiece unigram or BPE"),
    ],
)
def test_malformed_tokenizer_files(tmp_path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_pretrained(tmp_path)


def test_malformed_config(bpe_directory: Path) -> None:
    (bpe_directory / "tokenizer_config.json").write_text("{oops")
    with pytest.raises(ValueError, match="tokenizer_config.json: not a readable JSON"):
        Tokenizer.from_pretrained(bpe_directory)


def test_bad_gguf_files(tmp_path, trained_bpe) -> None:
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\x00" * 7)
    with pytest.raises(ValueError, match="junk.gguf: not a readable GGUF"):
        Tokenizer.from_gguf(tmp_path / "junk.gguf")
    empty = _write_gguf(tmp_path / "empty.gguf", {"general.name": "x"})
    with pytest.raises(ValueError, match="empty.gguf: no tokenizer"):
        Tokenizer.from_gguf(empty)
    bert = _write_gguf(
        tmp_path / "bert.gguf", {"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]}
    )
    with pytest.raises(ValueError, match="bert.gguf: tokenizer.ggml.model is 'bert'; supported"):
        Tokenizer.from_gguf(bert)
    backend, _ = trained_bpe
    odd = _byte_level_gguf(tmp_path / "odd.gguf", backend, "no-such-pre")
    with pytest.raises(ValueError, match="unsupported pre-tokenizer .*'no-such-pre'"):
        Tokenizer.from_gguf(odd)
