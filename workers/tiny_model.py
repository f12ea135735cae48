"""A tiny random Llama model with a character tokenizer, for engines on the CPU.

`python -m workers.tiny_model DIR [--force]` writes it; `ensure_tiny_model(path)` writes
it only when missing or incomplete. Its text is gibberish by design: it exists so a real
vLLM engine can start in seconds, offline (`HF_HUB_OFFLINE=1`), with no download.
torch and transformers are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

SEED = 0
HIDDEN_SIZE = 128
INTERMEDIATE_SIZE = 256
NUM_LAYERS = 2
NUM_HEADS = 4
NUM_KV_HEADS = 2
MAX_POSITION_EMBEDDINGS = 32768

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, *ROLE_TOKENS)
# Every printable ASCII character but the two exotic form feeds: 98 characters.
CHARACTERS = tuple(c for c in string.printable if c not in "\x0b\x0c")

# "<|role|>content<|end|>" turns, then "<|assistant|>" when a reply is wanted.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# What a complete model directory holds; anything less is rewritten.
REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def vocabulary() -> dict[str, int]:
    """Token -> id: the special tokens first, then one token per character."""
    tokens = (*SPECIAL_TOKENS, *CHARACTERS)
    return {token: token_id for token_id, token in enumerate(tokens)}


def is_complete(path: Path) -> bool:
    return all((path / name).is_file() for name in REQUIRED_FILES)


def ensure_tiny_model(path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write the tiny model to `path` unless a complete one is already there.

    Atomic: the files are written to a temporary sibling directory, which is then
    renamed into place, so a reader never sees a half-written model. Idempotent: a
    complete directory is left alone (unless `force`).
    """
    target = Path(path).resolve()
    if is_complete(target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write_tiny_model(staging)
        _move_into_place(staging, target, replace=force or target.exists())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _move_into_place(staging: Path, target: Path, *, replace: bool) -> None:
    # mkdtemp makes a private directory; the model is meant to be shared.
    staging.chmod(0o755)
    for file in staging.iterdir():
        file.chmod(0o644)
    if replace and target.exists():
        shutil.rmtree(target)
    try:
        staging.rename(target)
    except OSError:
        # Another process won the race and renamed its own copy first.
        if not is_complete(target):
            raise


def write_tiny_model(directory: Path) -> None:
    """Write the model weights, its config and the tokenizer files into `directory`."""
    vocab = vocabulary()
    _write_model(directory, vocab)
    _write_tokenizer(directory, vocab)


def _write_model(directory: Path, vocab: dict[str, int]) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        pad_token_id=vocab[PAD],
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(directory)
    generation = GenerationConfig(
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[PAD]
    )
    generation.save_pretrained(directory)


def _write_tokenizer(directory: Path, vocab: dict[str, int]) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # One token per character; special tokens are matched whole before this split.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.save(str(directory / "tokenizer.json"))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
    _write_json(directory / "special_tokens_map.json", special)
    _write_json(
        directory / "tokenizer_config.json",
        {
            **special,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": MAX_POSITION_EMBEDDINGS,
            "clean_up_tokenization_spaces": False,
            "add_bos_token": False,
            "add_eos_token": False,
            "chat_template": CHAT_TEMPLATE,
        },
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.tiny_model",
        description="Write a tiny random Llama model with a character tokenizer.",
    )
    parser.add_argument("directory", type=Path, help="where to write the model")
    parser.add_argument("--force", action="store_true", help="rewrite a complete model too")
    args = parser.parse_args(argv)
    if is_complete(args.directory.resolve()) and not args.force:
        print(f"tiny model already present at {args.directory} (use --force to rewrite)")
        return 0
    path = ensure_tiny_model(args.directory, force=args.force)
    size_kib = sum(f.stat().st_size for f in path.iterdir()) / 1024
    print(f"wrote tiny model to {path} ({size_kib:.0f} KiB, vocabulary {len(vocabulary())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
