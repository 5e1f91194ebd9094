"""Models by name: `owner/repo[:QUANT]` -> a local path, through huggingface_hub.

A name that exists on disk is a path and is returned unchanged. Otherwise `owner/repo`
names a Hugging Face repository and QUANT (Q4_K_M, q8_0, f16: any case) one of its GGUF
files, or `owner/repo:FILE.gguf` the file itself. Files come from huggingface_hub's cache
and are downloaded into it (with its progress bars) when missing; its environment
variables apply (HF_HOME, HF_HUB_CACHE, HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE: with the
last, only the cache is read). Every failure is a ValueError of one line, which the CLI
prints as its error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# owner/repo, then optionally :QUANT or :path/in/repo.gguf. The characters are the Hub's
# (letters, digits, '-', '_', '.'); anything else is left to the loaders as a path.
_NAME = re.compile(
    r"(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?::(?P<quant>[^:]+))?"
)
# llama.cpp's gguf-split naming: model-Q4_K_M-00001-of-00003.gguf.
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
# The top-level files an HF safetensors checkpoint loads from (config, tokenizer, weights).
_HF_DIR_FILES = re.compile(r"[^/]*\.(json|safetensors)|tokenizer\.model")
_TRUE = {"1", "ON", "YES", "TRUE"}


def resolve_model(name: str | Path) -> Path:
    """The local path of a model named by a path or by `owner/repo[:QUANT]`.

    A Path, or a name that exists on disk, is returned unchanged; so is a name that is not
    shaped like a repository id (the loaders then say what is wrong with the path).

    Raises:
        ValueError: the repository has no matching file, several (the message lists the
            repository's GGUF files), cannot be reached and is not cached, or does not exist.
    """
    if isinstance(name, Path) or Path(name).exists():
        return Path(name)
    m = _NAME.fullmatch(name)
    # A missing `dir/model.gguf` is a mistyped path, not a repository named *.gguf.
    if m is None or (m["quant"] is None and name.lower().endswith(".gguf")):
        return Path(name)
    return _Repo(m["repo"]).resolve(m["quant"])


def _offline() -> bool:
    from huggingface_hub import constants

    # constants.HF_HUB_OFFLINE is read once, at import; the variable may be set since.
    env = os.environ.get("HF_HUB_OFFLINE")
    return bool(constants.HF_HUB_OFFLINE) if env is None else env.strip().upper() in _TRUE


def _cache_dir() -> Path:
    from huggingface_hub import constants

    # As constants.HF_HUB_CACHE, but read now (constants are fixed when the hub is imported).
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if value := os.environ.get(var):
            return Path(value).expanduser()
    if value := os.environ.get("HF_HOME"):
        return Path(value).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _gguf_set(file: str) -> str:
    """The name shared by a split GGUF's shards (the file itself when not split)."""
    return _SPLIT.sub(".gguf", file)


class _Repo:
    """One repository: its file list (from the Hub, or from the cache when offline)."""

    def __init__(self, repo: str) -> None:
        self.repo = repo
        self.offline = _offline()
        self.cache = _cache_dir()
        self.files: list[str] = []
        self.ggufs: list[str] = []

    def _use(self, files: list[str]) -> None:
        self.files = files
        self.ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))

    def _list_files(self) -> list[str]:
        if self.offline:
            files = self._cached_files()
            if files is None:
                raise ValueError(
                    f"{self.repo}: no such local path, and not in the Hugging Face cache "
                    f"({self.cache}); HF_HUB_OFFLINE is set, so it is not downloaded "
                    "(unset HF_HUB_OFFLINE to download it)"
                )
            return files
        from huggingface_hub import HfApi
        from huggingface_hub.utils import (  # where 0.23 and later all export them
            GatedRepoError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            return HfApi().list_repo_files(self.repo)
        except GatedRepoError:
            raise ValueError(
                f"{self.repo}: the repository is gated; accept its terms on the Hub and log "
                "in (`hf auth login` or HF_TOKEN)"
            ) from None
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise ValueError(
                f"{self.repo}: no such local path, and no such repository on the Hugging "
                "Face Hub (or it is private: log in with `hf auth login` or set HF_TOKEN)"
            ) from None
        except Exception as e:  # no network, a proxy, the Hub down: the cache may still do
            files = self._cached_files()
            if files is None:
                reason = " ".join(str(e).split()) or type(e).__name__
                raise ValueError(
                    f"{self.repo}: cannot list the repository's files ({reason}) and it is "
                    f"not in the Hugging Face cache ({self.cache})"
                ) from None
            return files

    def _cached_files(self) -> list[str] | None:
        """The files of the cached snapshot of main (the cache layout huggingface_hub
        writes: models--owner--repo/refs/main -> snapshots/<commit>/...), or None."""
        folder = self.cache / ("models--" + self.repo.replace("/", "--"))
        snapshots = folder / "snapshots"
        ref = folder / "refs" / "main"
        if ref.is_file():
            snapshot = snapshots / ref.read_text().strip()
        else:  # downloaded by commit only: the newest snapshot
            found = sorted(snapshots.glob("*"), key=lambda p: p.stat().st_mtime)
            if not found:
                return None
            snapshot = found[-1]
        if not snapshot.is_dir():
            return None
        return sorted(
            p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()
        )

    def _listing(self) -> str:
        """The repository's GGUF files, for error messages."""
        sets = sorted({_gguf_set(f) for f in self.ggufs})
        return ", ".join(sets) if sets else "none"

    def resolve(self, quant: str | None) -> Path:
        if quant is not None and not self.offline and (cached := self._cached_files()):
            # A quant already in the cache is that file online too: hf_hub_download still
            # checks it for updates, but no listing is needed, and without a network the
            # listing alone would retry for half a minute before falling back to the cache.
            self._use(cached)
            matches = self._matches(quant)
            if len(matches) == 1 and not _SPLIT.search(matches[0]):
                return self._download(matches[0])
        self._use(self._list_files())
        if quant is None:
            return self._resolve_unnamed()
        matches = self._matches(quant)
        if quant.lower().endswith(".gguf"):
            if not matches:
                raise ValueError(
                    f"{self.repo}: has no file {quant}; its GGUF files: {self._listing()}"
                )
            return self._gguf(matches)
        if not self.ggufs:
            kind = " (an HF checkpoint: name it without :QUANT)" if self._checkpoint() else ""
            raise ValueError(f"{self.repo}: has no GGUF files, so no {quant}{kind}")
        if not matches:
            raise ValueError(
                f"{self.repo}: no GGUF file for {quant}; its GGUF files: {self._listing()}"
            )
        return self._gguf(matches)

    def _matches(self, quant: str) -> list[str]:
        """The GGUF files quant names: a file by its path, else by its quant."""
        if quant.lower().endswith(".gguf"):
            return [f for f in self.ggufs if f == quant] or [
                f for f in self.ggufs if f.lower() == quant.lower()
            ]
        # The quant is a whole token of the name: Q4_K must not pick Q4_K_M, nor Q4_0 pick
        # Q4_0_4_4 ('_' after it continues the quant); IQ4_XS is not Q4_XS.
        token = re.compile(rf"(^|[-._/]){re.escape(quant)}([-./]|$)", re.IGNORECASE)
        # mmproj-*.gguf are vision projectors, never the language model asked for.
        return [f for f in self.ggufs if token.search(f) and "mmproj" not in f.rsplit("/", 1)[-1]]

    def _resolve_unnamed(self) -> Path:
        models = [f for f in self.ggufs if "mmproj" not in f.rsplit("/", 1)[-1]]
        if models:
            if len({_gguf_set(f) for f in models}) > 1:
                raise ValueError(
                    f"{self.repo}: has several GGUF files; name one with {self.repo}:QUANT "
                    f"(e.g. :Q4_K_M) or {self.repo}:FILE.gguf; its GGUF files: "
                    f"{self._listing()}"
                )
            return self._gguf(models)
        if self._checkpoint():
            return self._snapshot([f for f in self.files if _HF_DIR_FILES.fullmatch(f)])
        raise ValueError(
            f"{self.repo}: has neither GGUF files nor an HF checkpoint (config.json and "
            "*.safetensors) to load"
        )

    def _checkpoint(self) -> bool:
        """Whether the repository is an HF checkpoint (config.json + *.safetensors)."""
        return "config.json" in self.files and any(
            _HF_DIR_FILES.fullmatch(f) and f.endswith(".safetensors") for f in self.files
        )

    def _gguf(self, matches: list[str]) -> Path:
        """The one GGUF among matches (a split set counts as one, and is refused)."""
        sets = sorted({_gguf_set(f) for f in matches})
        if len(sets) > 1:
            raise ValueError(
                f"{self.repo}: several GGUF files match ({', '.join(sets)}); name one with "
                f"{self.repo}:FILE.gguf"
            )
        shards = sorted(f for f in matches if _SPLIT.search(f))
        if shards:
            # lutlm's GGUF loader reads one file; the shards' tensors are spread over all.
            raise ValueError(
                f"{self.repo}: {sets[0]} is split into {len(shards)} files ({shards[0]}, "
                "...); lutlm loads single-file GGUFs: merge them with llama.cpp's "
                f"`llama-gguf-split --merge {shards[0].rsplit('/', 1)[-1]} OUT.gguf` and "
                "pass OUT.gguf, or pick another quant"
            )
        return self._download(matches[0])

    def _download(self, file: str) -> Path:
        from huggingface_hub import hf_hub_download

        try:
            # Shows huggingface_hub's tqdm bar while downloading; a cached file is reused.
            return Path(
                hf_hub_download(
                    self.repo, file, cache_dir=self.cache, local_files_only=self.offline
                )
            )
        except Exception as e:  # the Hub's errors (HTTP, not cached) are OSErrors: one line
            raise ValueError(
                f"{self.repo}: cannot download {file} ({' '.join(str(e).split())})"
            ) from None

    def _snapshot(self, files: list[str]) -> Path:
        from huggingface_hub import snapshot_download

        try:
            # Only what the HF directory loader reads: not other formats' weights beside it.
            return Path(
                snapshot_download(
                    self.repo,
                    allow_patterns=files,
                    cache_dir=self.cache,
                    local_files_only=self.offline,
                )
            )
        except Exception as e:
            raise ValueError(
                f"{self.repo}: cannot download the checkpoint ({' '.join(str(e).split())})"
            ) from None
