// Schemas and argument preparation of the preference-loss ops.
//
// Each loss is an op returning per-pair, per-row or per-token values (the reductions and metrics
// stay in Python, in pyalign/losses/) and a backward op returning the analytic gradient of every
// floating-point input. The formulas are in loss_math.h, the kernels in cpu/losses_cpu.cpp and
// cuda/losses_cuda.cu, and the fake kernels and autograd in pyalign/ops/losses.py.
#include "losses.h"

#include <torch/library.h>

#include <cmath>
#include <initializer_list>

#include "logprobs.h"

namespace pyalign {
namespace {

using loss_math::DpoLossType;

bool is_float(const at::Tensor& tensor) {
  const at::ScalarType dtype = tensor.scalar_type();
  return dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kFloat ||
         dtype == at::kDouble;
}

void check_float(const char* op_name, const char* argument, const at::Tensor& tensor) {
  TORCH_CHECK_TYPE(is_float(tensor), op_name, ": ", argument,
                   " must be float16, bfloat16, float32 or float64, got ",
                   dtype_name(tensor.scalar_type()));
}

void check_shape(const char* op_name, const char* argument, const at::Tensor& tensor,
                 at::IntArrayRef shape, const char* shape_name) {
  TORCH_CHECK_VALUE(tensor.sizes() == shape, op_name, ": ", argument, " must have shape ",
                    shape_name, " = ", shape, ", got ", tensor.sizes());
}

void check_device(const char* op_name, const char* argument, const at::Tensor& tensor,
                  const at::Tensor& first) {
  TORCH_CHECK_VALUE(tensor.device() == first.device(), op_name, ": ", argument,
                    " must be on the device of the first argument (", first.device(), "), got ",
                    tensor.device());
}

// Returns the dtype of the computation: float64 when one of the tensors is, float32 otherwise.
at::ScalarType compute_dtype(std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* tensor : tensors) {
    if (tensor->defined() && tensor->scalar_type() == at::kDouble) {
      return at::kDouble;
    }
  }
  return at::kFloat;
}

// Converts token counts (any real dtype) to the compute dtype, at least 1.
at::Tensor prepare_tokens(const char* op_name, const char* argument, const at::Tensor& tokens,
                          const at::Tensor& first, at::ScalarType dtype) {
  TORCH_CHECK_TYPE(!tokens.is_complex() && tokens.scalar_type() != at::kBool, op_name, ": ",
                   argument, " must be a real tensor of token counts, got ",
                   dtype_name(tokens.scalar_type()));
  check_shape(op_name, argument, tokens, first.sizes(), "(P,)");
  check_device(op_name, argument, tokens, first);
  return tokens.to(dtype).clamp_min(1).contiguous();
}

DpoLossType parse_dpo_loss_type(const char* op_name, const std::string& name) {
  if (name == "sigmoid") return DpoLossType::kSigmoid;
  if (name == "robust") return DpoLossType::kRobust;
  if (name == "hinge") return DpoLossType::kHinge;
  if (name == "ipo") return DpoLossType::kIpo;
  if (name == "simpo") return DpoLossType::kSimpo;
  if (name == "cpo") return DpoLossType::kCpo;
  TORCH_CHECK_VALUE(false, op_name, ": unknown loss_type '", name,
                    "'; expected sigmoid, robust, hinge, ipo, simpo or cpo");
  return DpoLossType::kSigmoid;  // Not reached: the check above throws.
}

}  // namespace

DpoArguments prepare_dpo_arguments(const char* op_name, const at::Tensor& chosen,
                                   const at::Tensor& rejected,
                                   const std::optional<at::Tensor>& reference_chosen,
                                   const std::optional<at::Tensor>& reference_rejected,
                                   const std::optional<at::Tensor>& chosen_tokens,
                                   const std::optional<at::Tensor>& rejected_tokens,
                                   const std::string& loss_type, double beta,
                                   double label_smoothing, double gamma) {
  const DpoLossType type = parse_dpo_loss_type(op_name, loss_type);
  TORCH_CHECK_VALUE(chosen.dim() == 1, op_name, ": chosen must have shape (P,), got ",
                    chosen.sizes());
  check_float(op_name, "chosen", chosen);
  check_float(op_name, "rejected", rejected);
  check_shape(op_name, "rejected", rejected, chosen.sizes(), "(P,)");
  check_device(op_name, "rejected", rejected, chosen);
  TORCH_CHECK_VALUE(beta > 0 && std::isfinite(beta), op_name,
                    ": beta must be finite and greater than 0, got ", beta);
  TORCH_CHECK_VALUE(label_smoothing >= 0 && label_smoothing < 0.5, op_name,
                    ": label_smoothing must be in [0, 0.5), got ", label_smoothing);

  const bool with_reference = loss_math::uses_reference(type);
  TORCH_CHECK_VALUE(reference_chosen.has_value() == with_reference &&
                        reference_rejected.has_value() == with_reference,
                    op_name, ": loss_type '", loss_type, "' ",
                    with_reference ? "needs reference_chosen and reference_rejected"
                                   : "is reference-free, so the reference log-probabilities "
                                     "must be None");
  const bool with_tokens = loss_math::is_length_normalised(type);
  TORCH_CHECK_VALUE(!with_tokens || (chosen_tokens.has_value() && rejected_tokens.has_value()),
                    op_name, ": loss_type '", loss_type,
                    "' needs chosen_tokens and rejected_tokens");

  at::Tensor reference_chosen_value = reference_chosen.value_or(at::Tensor());
  at::Tensor reference_rejected_value = reference_rejected.value_or(at::Tensor());
  const at::ScalarType dtype =
      compute_dtype({&chosen, &rejected, &reference_chosen_value, &reference_rejected_value});

  DpoArguments args;
  args.type = type;
  args.beta = beta;
  args.label_smoothing = label_smoothing;
  args.gamma = gamma;
  args.chosen = chosen.to(dtype).contiguous();
  args.rejected = rejected.to(dtype).contiguous();
  if (with_reference) {
    check_float(op_name, "reference_chosen", reference_chosen_value);
    check_float(op_name, "reference_rejected", reference_rejected_value);
    check_shape(op_name, "reference_chosen", reference_chosen_value, chosen.sizes(), "(P,)");
    check_shape(op_name, "reference_rejected", reference_rejected_value, chosen.sizes(), "(P,)");
    check_device(op_name, "reference_chosen", reference_chosen_value, chosen);
    check_device(op_name, "reference_rejected", reference_rejected_value, chosen);
    args.reference_chosen = reference_chosen_value.to(dtype).contiguous();
    args.reference_rejected = reference_rejected_value.to(dtype).contiguous();
  } else {
    args.reference_chosen = at::zeros_like(args.chosen);
    args.reference_rejected = at::zeros_like(args.chosen);
  }
  if (with_tokens) {
    args.chosen_tokens = prepare_tokens(op_name, "chosen_tokens", *chosen_tokens, chosen, dtype);
    args.rejected_tokens =
        prepare_tokens(op_name, "rejected_tokens", *rejected_tokens, chosen, dtype);
  } else {
    args.chosen_tokens = at::ones_like(args.chosen);
    args.rejected_tokens = at::ones_like(args.chosen);
  }
  return args;
}

KtoArguments prepare_kto_arguments(const char* op_name, const at::Tensor& policy_logps,
                                   const at::Tensor& reference_logps, const at::Tensor& labels,
                                   const at::Tensor& kl, double beta, double desirable_weight,
                                   double undesirable_weight) {
  TORCH_CHECK_VALUE(policy_logps.dim() == 1, op_name, ": policy_logps must have shape (B,), got ",
                    policy_logps.sizes());
  check_float(op_name, "policy_logps", policy_logps);
  check_float(op_name, "reference_logps", reference_logps);
  check_float(op_name, "kl", kl);
  check_shape(op_name, "reference_logps", reference_logps, policy_logps.sizes(), "(B,)");
  check_shape(op_name, "labels", labels, policy_logps.sizes(), "(B,)");
  TORCH_CHECK_VALUE(kl.dim() == 0, op_name, ": kl must be a 0-d tensor, got shape ", kl.sizes());
  TORCH_CHECK_TYPE(labels.scalar_type() == at::kBool, op_name, ": labels must be bool, got ",
                   dtype_name(labels.scalar_type()));
  check_device(op_name, "reference_logps", reference_logps, policy_logps);
  check_device(op_name, "labels", labels, policy_logps);
  check_device(op_name, "kl", kl, policy_logps);
  TORCH_CHECK_VALUE(beta > 0 && std::isfinite(beta), op_name,
                    ": beta must be finite and greater than 0, got ", beta);
  TORCH_CHECK_VALUE(desirable_weight > 0 && undesirable_weight > 0 &&
                        std::isfinite(desirable_weight) && std::isfinite(undesirable_weight),
                    op_name,
                    ": desirable_weight and undesirable_weight must be finite and greater than 0, "
                    "got ",
                    desirable_weight, " and ", undesirable_weight);

  const at::ScalarType dtype = compute_dtype({&policy_logps, &reference_logps, &kl});
  KtoArguments args;
  args.policy = policy_logps.to(dtype).contiguous();
  args.reference = reference_logps.to(dtype).contiguous();
  args.labels = labels.contiguous();
  args.kl = kl.to(dtype).contiguous();
  args.beta = beta;
  args.desirable_weight = desirable_weight;
  args.undesirable_weight = undesirable_weight;
  return args;
}

OrpoArguments prepare_orpo_arguments(const char* op_name, const at::Tensor& chosen,
                                     const at::Tensor& rejected, const at::Tensor& chosen_tokens,
                                     const at::Tensor& rejected_tokens, double beta) {
  TORCH_CHECK_VALUE(chosen.dim() == 1, op_name, ": chosen must have shape (P,), got ",
                    chosen.sizes());
  check_float(op_name, "chosen", chosen);
  check_float(op_name, "rejected", rejected);
  check_shape(op_name, "rejected", rejected, chosen.sizes(), "(P,)");
  check_device(op_name, "rejected", rejected, chosen);
  TORCH_CHECK_VALUE(beta > 0 && std::isfinite(beta), op_name,
                    ": beta must be finite and greater than 0, got ", beta);

  const at::ScalarType dtype = compute_dtype({&chosen, &rejected});
  OrpoArguments args;
  args.chosen = chosen.to(dtype).contiguous();
  args.rejected = rejected.to(dtype).contiguous();
  args.chosen_tokens = prepare_tokens(op_name, "chosen_tokens", chosen_tokens, chosen, dtype);
  args.rejected_tokens = prepare_tokens(op_name, "rejected_tokens", rejected_tokens, chosen, dtype);
  args.beta = beta;
  return args;
}

GrpoArguments prepare_grpo_arguments(const char* op_name, const at::Tensor& logps,
                                     const std::optional<at::Tensor>& old_logps,
                                     const std::optional<at::Tensor>& ref_logps,
                                     const at::Tensor& advantages,
                                     const at::Tensor& completion_mask, double beta,
                                     double epsilon_low, double epsilon_high) {
  TORCH_CHECK_VALUE(logps.dim() == 2, op_name, ": logps must have shape (B, T), got ",
                    logps.sizes());
  check_float(op_name, "logps", logps);
  check_float(op_name, "advantages", advantages);
  check_shape(op_name, "completion_mask", completion_mask, logps.sizes(), "(B, T)");
  check_shape(op_name, "advantages", advantages, {logps.size(0)}, "(B,)");
  TORCH_CHECK_TYPE(completion_mask.scalar_type() == at::kBool, op_name,
                   ": completion_mask must be bool, got ",
                   dtype_name(completion_mask.scalar_type()));
  check_device(op_name, "completion_mask", completion_mask, logps);
  check_device(op_name, "advantages", advantages, logps);
  TORCH_CHECK_VALUE(beta >= 0 && std::isfinite(beta), op_name,
                    ": beta must be finite and at least 0, got ", beta);
  TORCH_CHECK_VALUE(epsilon_low > 0 && epsilon_low < 1, op_name,
                    ": epsilon_low must be in (0, 1), got ", epsilon_low);
  TORCH_CHECK_VALUE(epsilon_high > 0 && std::isfinite(epsilon_high), op_name,
                    ": epsilon_high must be finite and greater than 0, got ", epsilon_high);

  at::Tensor old_value = old_logps.value_or(at::Tensor());
  at::Tensor ref_value = ref_logps.value_or(at::Tensor());
  const at::ScalarType dtype = compute_dtype({&logps, &old_value, &ref_value, &advantages});
  GrpoArguments args;
  args.logps = logps.to(dtype).contiguous();
  if (old_value.defined()) {
    check_float(op_name, "old_logps", old_value);
    check_shape(op_name, "old_logps", old_value, logps.sizes(), "(B, T)");
    check_device(op_name, "old_logps", old_value, logps);
    args.old_logps = old_value.to(dtype).contiguous();
  }
  if (ref_value.defined()) {
    check_float(op_name, "ref_logps", ref_value);
    check_shape(op_name, "ref_logps", ref_value, logps.sizes(), "(B, T)");
    check_device(op_name, "ref_logps", ref_value, logps);
    args.ref_logps = ref_value.to(dtype).contiguous();
  }
  args.advantages = advantages.to(dtype).contiguous();
  args.mask = completion_mask.contiguous();
  args.beta = beta;
  args.epsilon_low = epsilon_low;
  args.epsilon_high = epsilon_high;
  return args;
}

at::Tensor prepare_grad(const char* op_name, const at::Tensor& grad, at::IntArrayRef shape,
                        at::ScalarType dtype) {
  check_float(op_name, "the incoming gradient", grad);
  TORCH_CHECK_VALUE(grad.sizes() == shape, op_name,
                    ": the incoming gradient must have the output's shape ", shape, ", got ",
                    grad.sizes());
  // The incoming gradient is often an expanded view (the backward of a mean), so copy it.
  return grad.to(dtype).contiguous();
}

}  // namespace pyalign

TORCH_LIBRARY_FRAGMENT(pyalign, m) {
  m.def(
      "dpo_loss(Tensor chosen, Tensor rejected, Tensor? reference_chosen, "
      "Tensor? reference_rejected, Tensor? chosen_tokens, Tensor? rejected_tokens, "
      "str loss_type, float beta, float label_smoothing, float gamma) "
      "-> (Tensor losses, Tensor chosen_rewards, Tensor rejected_rewards)");
  m.def(
      "dpo_loss_backward(Tensor grad_losses, Tensor chosen, Tensor rejected, "
      "Tensor? reference_chosen, Tensor? reference_rejected, Tensor? chosen_tokens, "
      "Tensor? rejected_tokens, str loss_type, float beta, float label_smoothing, float gamma) "
      "-> (Tensor grad_chosen, Tensor grad_rejected, Tensor? grad_reference_chosen, "
      "Tensor? grad_reference_rejected)");
  m.def(
      "kto_loss(Tensor policy_logps, Tensor reference_logps, Tensor labels, Tensor kl, "
      "float beta, float desirable_weight, float undesirable_weight) "
      "-> (Tensor losses, Tensor rewards)");
  m.def(
      "kto_loss_backward(Tensor grad_losses, Tensor policy_logps, Tensor reference_logps, "
      "Tensor labels, Tensor kl, float beta, float desirable_weight, float undesirable_weight) "
      "-> (Tensor grad_policy_logps, Tensor grad_reference_logps, Tensor grad_kl)");
  m.def(
      "orpo_loss(Tensor chosen, Tensor rejected, Tensor chosen_tokens, Tensor rejected_tokens, "
      "float beta) -> (Tensor losses, Tensor log_odds)");
  m.def(
      "orpo_loss_backward(Tensor grad_losses, Tensor chosen, Tensor rejected, "
      "Tensor chosen_tokens, Tensor rejected_tokens, float beta) "
      "-> (Tensor grad_chosen, Tensor grad_rejected)");
  m.def(
      "grpo_loss(Tensor logps, Tensor? old_logps, Tensor? ref_logps, Tensor advantages, "
      "Tensor completion_mask, float beta, float epsilon_low, float epsilon_high) "
      "-> (Tensor losses, Tensor kl, Tensor low_clipped, Tensor high_clipped)");
  m.def(
      "grpo_loss_backward(Tensor grad_losses, Tensor logps, Tensor? old_logps, "
      "Tensor? ref_logps, Tensor advantages, Tensor completion_mask, float beta, "
      "float epsilon_low, float epsilon_high) "
      "-> (Tensor grad_logps, Tensor? grad_old_logps, Tensor? grad_ref_logps, "
      "Tensor grad_advantages)");
}
