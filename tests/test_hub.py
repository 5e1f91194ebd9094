"""Models by name (formats/hub.py): `owner/repo[:QUANT]` resolves through huggingface_hub's
cache. Offline throughout: HF_HUB_OFFLINE=1 and a hub cache laid out by hand in a
temporary directory (models--owner--repo/refs/main -> snapshots/<commit>/<files>, which is
all huggingface_hub reads for a cached file), with HF_ENDPOINT pointing nowhere in case
anything tried the network anyway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lutlm import LLM, SamplingParams
from lutlm.formats.hub import resolve_model

from .test_loader_validation import sentencepiece_vocab, write_gguf

COMMIT = "0123456789abcdef0123456789abcdef01234567"
QUANTS = [
    "tiny-Q4_K_M.gguf",
    "tiny-Q4_K.gguf",
    "tiny-IQ4_XS.gguf",
    "tiny-Q8_0.gguf",
    "tiny-Q4_0_4_4.gguf",
    "mmproj-tiny-f16.gguf",
    "tiny-f16.gguf",
    "big/big-Q6_K-00001-of-00002.gguf",
    "big/big-Q6_K-00002-of-00002.gguf",
    "README.md",
]


def hub_env(cache: Path) -> dict[str, str]:
    return {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # the discard port: never the Hub
    }


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "hub"
    root.mkdir()
    for key, value in hub_env(root).items():
        monkeypatch.setenv(key, value)
    return root


def lay_out(cache: Path, repo: str, files: dict[str, bytes | Path]) -> Path:
    """A cached snapshot of repo's main branch holding files; returns the snapshot."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT
    for name, content in files.items():
        path = snapshot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            path.write_bytes(content.read_bytes())
        else:
            path.write_bytes(content)
    return snapshot


@pytest.fixture
def quants(cache) -> Path:
    return lay_out(cache, "owner/quants", {name: b"GGUF" for name in QUANTS})


@pytest.mark.parametrize(
    ("quant", "file"),
    [
        ("Q4_K_M", "tiny-Q4_K_M.gguf"),
        ("q4_k_m", "tiny-Q4_K_M.gguf"),  # any case
        ("Q4_K", "tiny-Q4_K.gguf"),  # not Q4_K_M: a quant is a whole token
        ("Q8_0", "tiny-Q8_0.gguf"),
        ("IQ4_XS", "tiny-IQ4_XS.gguf"),
        ("F16", "tiny-f16.gguf"),  # not the vision projector's mmproj-tiny-f16.gguf
        ("tiny-Q4_0_4_4.gguf", "tiny-Q4_0_4_4.gguf"),  # a file name
        ("mmproj-tiny-f16.gguf", "mmproj-tiny-f16.gguf"),
    ],
)
def test_quant_picks_its_file(quants, quant, file):
    assert resolve_model(f"owner/quants:{quant}") == quants / file


def test_missing_quant_lists_the_gguf_files(quants):
    with pytest.raises(ValueError) as e:
        resolve_model("owner/quants:Q5_K_S")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("owner/quants: no GGUF file for Q5_K_S")
    for name in ("tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf", "big/big-Q6_K.gguf"):
        assert name in msg
    assert "README.md" not in msg
    with pytest.raises(ValueError, match=r"has no file nope\.gguf; its GGUF files: .*Q8_0"):
        resolve_model("owner/quants:nope.gguf")
    # Q4_0 is a token of no name: Q4_0_4_4 is another quant.
    with pytest.raises(ValueError, match="no GGUF file for Q4_0;"):
        resolve_model("owner/quants:Q4_0")


def test_no_quant_with_several_ggufs_is_ambiguous(quants):
    with pytest.raises(ValueError) as e:
        resolve_model("owner/quants")
    msg = str(e.value)
    assert "\n" not in msg and "several GGUF files" in msg and "owner/quants:QUANT" in msg
    assert "tiny-Q4_K_M.gguf" in msg and "tiny-f16.gguf" in msg


def test_split_gguf_is_refused_with_the_merge_command(quants):
    with pytest.raises(ValueError) as e:
        resolve_model("owner/quants:Q6_K")
    msg = str(e.value)
    assert "big/big-Q6_K.gguf is split into 2 files" in msg
    assert "llama-gguf-split --merge big-Q6_K-00001-of-00002.gguf" in msg


def test_a_single_gguf_needs_no_quant(cache):
    snapshot = lay_out(cache, "owner/one", {"one.Q4_1.gguf": b"GGUF", "mmproj.gguf": b"GGUF"})
    assert resolve_model("owner/one") == snapshot / "one.Q4_1.gguf"
    assert resolve_model("owner/one:q4_1") == snapshot / "one.Q4_1.gguf"  # '.' bounds it


def test_hf_checkpoint_repo_resolves_to_its_snapshot(cache):
    files = {"config.json": b"{}", "tokenizer.json": b"{}", "model.safetensors": b"x"}
    snapshot = lay_out(cache, "owner/hf", files)
    assert resolve_model("owner/hf") == snapshot
    with pytest.raises(ValueError, match=r"owner/hf: has no GGUF files, so no Q4_K_M \(an HF"):
        resolve_model("owner/hf:Q4_K_M")
    lay_out(cache, "owner/bin", {"config.json": b"{}", "pytorch_model.bin": b"x"})
    with pytest.raises(ValueError, match="neither GGUF files nor an HF checkpoint"):
        resolve_model("owner/bin")


def test_unknown_repo_offline_names_the_repo_and_the_variable(cache):
    with pytest.raises(ValueError) as e:
        resolve_model("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF:Q4_K_M")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF: no such local path")
    assert str(cache) in msg and "HF_HUB_OFFLINE" in msg


def test_local_paths_are_untouched(tmp_path, cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "model.gguf").write_bytes(b"GGUF")
    # An existing relative path shaped like a repository id is a path.
    assert resolve_model("owner/model.gguf") == Path("owner/model.gguf")
    assert resolve_model("owner") == Path("owner")
    # So is a Path, existing or not, and a missing *.gguf (the loader reports it).
    assert resolve_model(Path("owner/missing")) == Path("owner/missing")
    assert resolve_model("owner/missing.gguf") == Path("owner/missing.gguf")
    assert resolve_model("/no/such/model.gguf") == Path("/no/such/model.gguf")


@pytest.fixture
def tiny_repo(tmp_path, cache) -> Path:
    gguf = write_gguf(tmp_path / "tiny.gguf", sentencepiece_vocab(64))
    return lay_out(cache, "owner/tiny-GGUF", {"tiny-Q8_0.gguf": gguf, "tiny-F16.gguf": gguf})


def test_llm_loads_a_model_by_name(tiny_repo):
    llm = LLM("owner/tiny-GGUF:Q8_0", weights="f32", head="f32", kv_cache_memory_gb=0.01)
    assert llm.model_path == tiny_repo / "tiny-Q8_0.gguf"
    out = llm.generate("w1 w2", SamplingParams(max_tokens=2, temperature=0, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 2


def run_cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lutlm.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **hub_env(cache)},
    )


def test_cli_generates_from_a_model_by_name(tiny_repo, cache):
    out = run_cli(
        cache,
        "generate",
        "w1 w2",
        "--model",
        "owner/tiny-GGUF:q8_0",
        "--weights",
        "f32",
        "--head",
        "f32",
        "--max-tokens",
        "2",
    )
    assert out.returncode == 0, out.stderr
    assert "loading owner/tiny-GGUF:q8_0" in out.stderr and "loaded tiny-Q8_0.gguf" in out.stderr
    # A quant the repository lacks (or no quant among several): exit 1, one line that
    # lists the files.
    for model, message in [
        ("owner/tiny-GGUF:Q2_K", "owner/tiny-GGUF: no GGUF file for Q2_K"),
        ("owner/tiny-GGUF", "owner/tiny-GGUF: has several GGUF files"),
    ]:
        out = run_cli(cache, "generate", "w1", "--model", model)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and message in errors[0], out.stderr
        assert "tiny-F16.gguf, tiny-Q8_0.gguf" in errors[0]


def test_cli_quantizes_a_model_by_name(tiny_repo, cache, tmp_path):
    out = run_cli(cache, "quantize", "owner/tiny-GGUF:Q8_0", str(tmp_path / "packed"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "packed" / "lutlm.json").is_file()
    out = run_cli(cache, "quantize", "owner/tiny-GGUF:Q2_K", str(tmp_path / "other"))
    assert out.returncode == 1 and "no GGUF file for Q2_K" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_model_named_by_repository_is_served_under_that_name(tiny_repo):
    from lutlm.server.state import default_served_name

    name = "owner/tiny-GGUF:Q8_0"
    assert default_served_name(name, tiny_repo / "tiny-Q8_0.gguf") == name
    assert default_served_name("owner/hf", tiny_repo) == "owner/hf"  # not the commit
    assert default_served_name("m/x.gguf", "m/x.gguf") == "x"
    assert default_served_name(None, tiny_repo / "tiny-Q8_0.gguf") == "tiny-Q8_0"


def test_without_network_a_cached_quant_needs_no_listing(quants, cache):
    """Online mode with the Hub unreachable (HF_ENDPOINT refuses connections, on this
    machine): a quant in the cache resolves at once; listing the repository first would
    retry for half a minute."""
    code = "from lutlm.formats.hub import resolve_model; print(resolve_model('owner/quants:Q8_0'))"
    env = {**os.environ, **hub_env(cache), "HF_HUB_OFFLINE": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(quants / "tiny-Q8_0.gguf")
