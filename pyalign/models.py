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
import weakref
from dataclasses import dataclass
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
        raise ModelNotFoundError(
            f"base_model path '{base_model}' does not exist (a relative path is taken from the "
            f"current folder, {Path.cwd()}); set base_model, or pass --set base_model=PATH"
        )
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


@dataclass(frozen=True)
class LMHead:
    """The LM head as passed to the fused op: weight (V, H), bias (V,) or None, and logit scale.

    ``logit_scale`` is the factor by which the model's own forward multiplies the head's output.
    It is 1 for most models. Granite divides by ``logits_scaling`` and Cohere multiplies by
    ``logit_scale``.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    logit_scale: float

    def op_inputs(
        self, hidden_states: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (hidden_states, bias) that give the model's logits divided by ``temperature``.

        The factor goes on the hidden states and the bias, so the op's product stays
        ``hidden @ weight.T + bias``.
        """
        factor = self.logit_scale / temperature
        if factor == 1.0:
            return hidden_states, self.bias
        bias = None if self.bias is None else self.bias * factor
        return hidden_states * factor, bias


_PROBE_TOKENS = 8
_logit_scales: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def decoder_and_head(model) -> tuple[Any, LMHead]:
    """Return the decoder stack (hidden states out) and the LM head of a model.

    The first call per model checks, on a few tokens, that the model's logits are the head's
    output times one factor. A model whose forward soft-caps the logits (Gemma 2 and 3) or
    transforms them otherwise is rejected, because the fused op would score a different
    distribution.
    """
    from peft import PeftModel

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    decoder = base.get_decoder()
    head = base.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        raise NotImplementedError(
            f"the LM head is a {type(head).__name__}, not a torch.nn.Linear; the fused "
            "log-probability op needs a plain linear head"
        )
    scale = _logit_scales.get(base)
    if scale is None:
        scale = _probe_logit_scale(base, decoder, head)
        _logit_scales[base] = scale
    return decoder, LMHead(head.weight, head.bias, scale)


def _probe_logit_scale(base, decoder, head: torch.nn.Linear) -> float:
    """Return the factor between the model's logits and its head's output, or raise."""
    model_type = getattr(base.config, "model_type", type(base).__name__)
    softcap = getattr(base.config, "final_logit_softcapping", None)
    if softcap is not None:
        raise NotImplementedError(
            f"{model_type} models soft-cap their logits (final_logit_softcapping = {softcap}), "
            "which the fused log-probability op cannot reproduce; this model is not supported"
        )
    vocab_size = head.weight.shape[0]
    input_ids = (torch.arange(_PROBE_TOKENS, device=head.weight.device) % vocab_size)[None]
    was_training = base.training
    base.eval()
    try:
        with torch.no_grad():
            logits = base(input_ids=input_ids).logits.double()  # (1, T, V)
            linear = head(decoder(input_ids=input_ids).last_hidden_state).double()  # (1, T, V)
    finally:
        base.train(was_training)

    # The least-squares factor, then a check that it explains the logits.
    scale = float((logits * linear).sum() / (linear * linear).sum().clamp(min=1e-30))
    tolerance = 1e-3 * float(logits.abs().max()) + 1e-5
    if not torch.allclose(logits, scale * linear, rtol=0, atol=tolerance):
        raise NotImplementedError(
            f"the {model_type} model's forward transforms its LM head's output beyond a scale "
            "factor, which the fused log-probability op cannot reproduce; this model is not "
            "supported"
        )
    # A factor within float noise of 1 is 1, so that most models skip the multiplication.
    if abs(scale - 1.0) < 1e-4:
        return 1.0
    logger.info(
        "the %s model scales its logits by %.6g; the fused op applies it", model_type, scale
    )
    return scale


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
