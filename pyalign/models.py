"""Load the base model, attach adapters and build the reference model.

``base_model`` is a local folder, a Hugging Face hub id, or a built-in preset such as
``pyalign/tiny``, which is built in code (no download) and cached on disk so that the tokenizer
and the weights load through the same path as any other model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

import torch

from pyalign.errors import ConfigError, ModelNotFoundError

logger = logging.getLogger(__name__)

TINY_PRESET = "pyalign/tiny"
PRESETS = (TINY_PRESET,)
# A hub id is "name" or "owner/name" made of letters, digits, '-', '_' and '.'.
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def cache_dir() -> Path:
    """Return pyalign's cache folder: ``$PYALIGN_CACHE`` or ``~/.cache/pyalign``."""
    return Path(os.environ.get("PYALIGN_CACHE", Path.home() / ".cache" / "pyalign"))


def resolve_base_model(base_model: str) -> str:
    """Return a loadable path or hub id for ``base_model``, building a preset if named.

    A value that looks like a path (it starts with '.', '/' or '~', or names an existing entry)
    must exist; anything else is treated as a hub id.
    """
    if base_model in PRESETS:
        return str(build_tiny_preset())
    if base_model.startswith("pyalign/"):
        raise ConfigError(
            f"unknown preset base_model '{base_model}'; built-in presets: {', '.join(PRESETS)}"
        )
    expanded = Path(base_model).expanduser()
    looks_like_path = base_model.startswith((".", "/", "~")) or not HUB_ID_PATTERN.match(base_model)
    if expanded.exists():
        if not (expanded / "config.json").is_file():
            raise ModelNotFoundError(
                f"base_model '{base_model}' is a path but contains no config.json; expected a "
                "Hugging Face model folder (config.json, weights, tokenizer.json)"
            )
        # Absolute, so that the adapter_config.json written with it loads from any folder.
        return str(expanded.resolve())
    if looks_like_path:
        raise ModelNotFoundError(f"base_model path '{base_model}' does not exist")
    return base_model


def load_model(model_path: str, dtype: torch.dtype = torch.float32):
    """Load a causal language model from a folder or hub id, with a clear error if it fails."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    except OSError as error:
        raise ModelNotFoundError(
            f"could not load base_model '{model_path}': {error}. Pass a local model folder, "
            "or make the hub reachable (HF_HUB_OFFLINE=1 only reads the local cache)"
        ) from None


def tokenizer_file(model_path: str) -> Path:
    """Return the ``tokenizer.json`` of a local model folder or of a cached hub model."""
    local = Path(model_path) / "tokenizer.json"
    if local.is_file():
        return local
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(model_path, "tokenizer.json"))
    except Exception as error:  # noqa: BLE001 - the hub client raises many unrelated types
        raise ModelNotFoundError(
            f"base_model '{model_path}' has no tokenizer.json ({error}); pyalign needs a fast "
            "tokenizer saved as tokenizer.json"
        ) from None


def apply_adapter(model, adapter: dict[str, Any] | None):
    """Wrap the model with LoRA adapters, or return it unchanged for full fine-tuning."""
    if adapter is None:
        return model
    from peft import LoraConfig, get_peft_model

    target_modules = adapter["target_modules"]
    if target_modules is not None and "lm_head" in target_modules:
        raise ConfigError(
            "adapter.target_modules must not include 'lm_head': the fused log-probability op "
            "reads the LM head weight directly; train the head with full fine-tuning instead"
        )
    lora = LoraConfig(
        r=adapter["r"],
        lora_alpha=adapter["alpha"],
        lora_dropout=adapter["dropout"],
        target_modules=target_modules,
        bias=adapter["bias_type"],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


class ReferenceModel:
    """The frozen reference policy of DPO-style losses.

    With LoRA the reference is the policy with its adapters disabled, so no second copy of the
    weights is held. With full fine-tuning it is a frozen copy made before the first step.
    Either way the reference runs in eval mode (no dropout) and without gradients.
    """

    def __init__(self, policy):
        from peft import PeftModel

        self.policy = policy
        self.shares_policy = isinstance(policy, PeftModel)
        if self.shares_policy:
            self.frozen = None
        else:
            self.frozen = copy.deepcopy(policy)
            self.frozen.requires_grad_(False)
            self.frozen.eval()

    @contextlib.contextmanager
    def activate(self) -> Iterator[Any]:
        """Yield the reference model; with LoRA, the policy with adapters off, in eval mode."""
        with torch.no_grad():
            if not self.shares_policy:
                yield self.frozen
                return
            was_training = self.policy.training
            self.policy.eval()
            try:
                with self.policy.disable_adapter():
                    yield self.policy
            finally:
                self.policy.train(was_training)


def decoder_and_head(model):
    """Return the decoder stack (hidden states out) and the LM head ``nn.Linear`` of a model."""
    from peft import PeftModel

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    decoder = base.get_decoder()
    head = base.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        raise NotImplementedError(
            f"the LM head is a {type(head).__name__}, not a torch.nn.Linear; the fused "
            "log-probability op needs a plain linear head"
        )
    return decoder, head


def build_tiny_preset() -> Path:
    """Build (once) and return the folder of the ``pyalign/tiny`` preset.

    A randomly initialised two-layer Llama (width 64) with a byte-level BPE tokenizer of 259
    tokens: ``<s>`` (BOS, added by the tokenizer), ``</s>`` (EOS), ``<pad>`` and the 256 bytes.
    It needs no download, so the quickstart and the tests run offline. Seeded, so every build
    gives the same weights.
    """
    folder = cache_dir() / "presets" / "tiny-v1"
    if (folder / "model.safetensors").is_file():
        return folder
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_byte_tokenizer()
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    torch.random.set_rng_state(generator_state)

    # Write to a temporary name and rename, so a crash never leaves a half-built preset.
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(staging)
    tokenizer.save(str(staging / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "model_max_length": 1024,
    }
    (staging / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    for entry in staging.iterdir():
        os.replace(entry, folder / entry.name)
    staging.rmdir()
    logger.info("built the %s preset in %s", TINY_PRESET, folder)
    return folder


def _build_byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["<s>", "</s>", "<pad>"]
    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: index for index, token in enumerate(specials)}
    for symbol in sorted(byte_alphabet):
        vocab[symbol] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 0)]
    )
    tokenizer.add_special_tokens(specials)
    return tokenizer
