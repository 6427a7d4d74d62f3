"""The LM head passed to the fused op: logit scales that models apply, and soft-capping."""

import pytest
import torch

from pyalign.models import decoder_and_head
from pyalign.trainers.base import sequence_logprobs

SIZES = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    bos_token_id=1,
    eos_token_id=2,
)


def granite_model(logits_scaling):
    from transformers import GraniteConfig, GraniteForCausalLM

    torch.manual_seed(0)
    return GraniteForCausalLM(GraniteConfig(**SIZES, logits_scaling=logits_scaling))


def cohere_model(logit_scale):
    from transformers import CohereConfig, CohereForCausalLM

    torch.manual_seed(0)
    return CohereForCausalLM(CohereConfig(**SIZES, logit_scale=logit_scale))


def llama_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SIZES))


def forward_sums(model, input_ids, label_mask):
    """Summed log-probabilities of the label_mask tokens from the model's own logits."""
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits.float()
    token_logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None])
    return (token_logps[..., 0] * label_mask[:, 1:]).sum(dim=1)


@pytest.mark.parametrize(
    ("make_model", "expected_scale"),
    [
        (lambda: granite_model(8.0), 1 / 8),
        (lambda: cohere_model(0.25), 0.25),
        (llama_model, 1.0),
    ],
    ids=["granite", "cohere", "llama"],
)
def test_scored_logps_match_model_forward(make_model, expected_scale):
    model = make_model().eval()
    with torch.no_grad():
        # Peaked logits, as a trained model has, so that a missing scale shows.
        model.get_output_embeddings().weight.mul_(20)
    torch.manual_seed(1)
    input_ids = torch.randint(3, 96, (2, 12))
    label_mask = torch.zeros(2, 12, dtype=torch.bool)
    label_mask[:, 5:] = True

    _, head = decoder_and_head(model)
    with torch.no_grad():
        result = sequence_logprobs(
            model, input_ids, torch.ones_like(input_ids), label_mask, "native"
        )

    assert head.logit_scale == pytest.approx(expected_scale, rel=1e-6)
    torch.testing.assert_close(
        result.sum, forward_sums(model, input_ids, label_mask), atol=1e-3, rtol=1e-5
    )


def test_soft_capped_model_rejected():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    model = Gemma2ForCausalLM(Gemma2Config(**SIZES, head_dim=8, final_logit_softcapping=30.0))

    with pytest.raises(NotImplementedError, match=r"soft-cap their logits .* not supported"):
        decoder_and_head(model)


def test_nonlinear_head_output_rejected():
    # A forward that transforms the logits in a way no scale factor explains.
    model = llama_model()
    original_forward = model.forward

    def squared_logits_forward(*args, **kwargs):
        outputs = original_forward(*args, **kwargs)
        outputs.logits = outputs.logits**2
        return outputs

    model.forward = squared_logits_forward

    with pytest.raises(NotImplementedError, match="beyond a scale factor"):
        decoder_and_head(model)
