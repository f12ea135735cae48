"""The tiny local model: written once, deterministic, loadable offline."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from workers.tiny_model import CHAT_TEMPLATE, REQUIRED_FILES, ensure_tiny_model, is_complete

REPO_ROOT = Path(__file__).resolve().parents[2]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_it_writes_every_file_vllm_needs(tiny_model_dir: Path) -> None:
    assert is_complete(tiny_model_dir)
    assert {p.name for p in tiny_model_dir.iterdir()} == set(REQUIRED_FILES)
    size = sum(p.stat().st_size for p in tiny_model_dir.iterdir())
    assert 500_000 < size < 3_000_000
    assert not [p for p in tiny_model_dir.parent.iterdir() if p.name.startswith(".")]


def test_it_is_written_once(tiny_model_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in tiny_model_dir.iterdir()}
    assert ensure_tiny_model(tiny_model_dir) == tiny_model_dir
    assert {p.name: p.stat().st_mtime_ns for p in tiny_model_dir.iterdir()} == before


def test_it_is_the_same_model_every_time(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = ensure_tiny_model(tmp_path / "again")
    for name in REQUIRED_FILES:
        assert digest(again / name) == digest(tiny_model_dir / name), name


def test_an_incomplete_directory_is_rewritten(tmp_path: Path) -> None:
    target = tmp_path / "half"
    target.mkdir()
    (target / "config.json").write_text("{}")
    ensure_tiny_model(target)
    assert is_complete(target)
    assert "llama" in (target / "config.json").read_text()


def test_its_config_is_a_small_llama(tiny_model_dir: Path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert config.model_type == "llama"
    assert (config.hidden_size, config.num_hidden_layers) == (128, 2)
    assert config.max_position_embeddings == 32768
    assert config.vocab_size == 106


def test_its_tokenizer_is_character_level_and_applies_the_chat_template(
    tiny_model_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(tokenizer) == 106
    ids = tokenizer("Fair, share!", add_special_tokens=False).input_ids
    assert len(ids) == len("Fair, share!")
    assert tokenizer.decode(ids) == "Fair, share!"

    messages = [{"role": "system", "content": "Be fair."}, {"role": "user", "content": "Hi"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<s><|system|>Be fair.<|end|><|user|>Hi<|end|><|assistant|>"
    assert tokenizer.chat_template == CHAT_TEMPLATE
    # Role markers are single tokens: bos, marker, 8 characters, end, marker, 2, end, marker.
    encoded = tokenizer(text, add_special_tokens=False).input_ids
    assert len(encoded) == 1 + 1 + 8 + 1 + 1 + 2 + 1 + 1


@pytest.mark.slow
def test_the_command_line_says_what_it_did(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "workers.tiny_model", str(tmp_path / "cli")]
    first = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    second = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert first.returncode == second.returncode == 0, first.stderr[-2000:]
    assert first.stdout.startswith("wrote tiny model to ")
    assert "already present" in second.stdout
