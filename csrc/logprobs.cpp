// Schemas and argument checks of the fused "LM head + log-softmax + gather" op.
//
// For hidden states h (N, H), an LM head weight W (V, H), an optional bias b (V,) and target
// token ids y (N,), the forward op returns per token
//   logits_i          = W h_i + b                      (V,)
//   logsumexp_i       = log sum_v exp(logits_iv)
//   token_logps_i     = logits_{i, y_i} - logsumexp_i
//   entropy_i         = -sum_v p_iv log p_iv, p_i = softmax(logits_i)   (if compute_entropy)
//   hidden_jacobian_i = d token_logps_i / d h_i = W_{y_i} - sum_v p_iv W_v
//                                                       (if compute_hidden_jacobian)
// without materialising the (N, V) logits; an output that is not requested has 0 rows. The
// kernels handle chunk_size tokens at a time. The backward op recomputes each chunk's logits and
// uses d token_logps_i / d logits_i = onehot(y_i) - softmax(logits_i), computing only the
// gradients it is asked for. With the hidden Jacobian from the forward pass, the gradient of
// the hidden states is grad_i * hidden_jacobian_i, and a frozen LM head needs no backward op.
//
// The kernels live in cpu/logprobs_cpu.cpp and cuda/logprobs_cuda.cu. Fake kernels and autograd
// are registered from Python in pyalign/ops/logprobs.py.
#include "logprobs.h"

#include <torch/library.h>

namespace pyalign {

std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf:
      return "float16";
    case at::kBFloat16:
      return "bfloat16";
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kLong:
      return "int64";
    case at::kInt:
      return "int32";
    case at::kBool:
      return "bool";
    default:
      return c10::toString(dtype);
  }
}

at::ScalarType accumulate_dtype(const at::Tensor& hidden, const at::Tensor& weight) {
  if (hidden.scalar_type() == at::kDouble || weight.scalar_type() == at::kDouble) {
    return at::kDouble;
  }
  return at::kFloat;
}

namespace {

bool is_supported_float(at::ScalarType dtype) {
  return dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kFloat ||
         dtype == at::kDouble;
}

void check_float_dtype(const char* op_name, const char* argument, const at::Tensor& tensor) {
  TORCH_CHECK_TYPE(is_supported_float(tensor.scalar_type()), op_name, ": ", argument,
                   " must be float16, bfloat16, float32 or float64, got ",
                   dtype_name(tensor.scalar_type()));
}

void check_same_device(const char* op_name, const char* argument, const at::Tensor& tensor,
                       const at::Tensor& hidden) {
  TORCH_CHECK_VALUE(tensor.device() == hidden.device(), op_name, ": ", argument,
                    " must be on the device of hidden (", hidden.device(), "), got ",
                    tensor.device());
}

}  // namespace

void check_logprobs_arguments(const char* op_name, const at::Tensor& hidden,
                              const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              const at::Tensor& targets, int64_t chunk_size) {
  TORCH_CHECK_VALUE(hidden.dim() == 2, op_name, ": hidden must be a 2-D (N, H) tensor, got shape ",
                    hidden.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 2, op_name, ": weight must be a 2-D (V, H) tensor, got shape ",
                    weight.sizes());
  const int64_t num_tokens = hidden.size(0);
  const int64_t hidden_size = hidden.size(1);
  const int64_t vocab_size = weight.size(0);
  TORCH_CHECK_VALUE(weight.size(1) == hidden_size, op_name,
                    ": weight must have shape (V, H) with H = hidden.size(1) = ", hidden_size,
                    ", got shape ", weight.sizes());
  TORCH_CHECK_VALUE(vocab_size > 0, op_name, ": weight must have at least one row (V >= 1)");
  check_float_dtype(op_name, "hidden", hidden);
  check_float_dtype(op_name, "weight", weight);
  check_same_device(op_name, "weight", weight, hidden);

  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == vocab_size, op_name,
                      ": bias must have shape (V,) with V = weight.size(0) = ", vocab_size,
                      ", got shape ", bias->sizes());
    check_float_dtype(op_name, "bias", *bias);
    check_same_device(op_name, "bias", *bias, hidden);
  }

  TORCH_CHECK_VALUE(targets.dim() == 1 && targets.size(0) == num_tokens, op_name,
                    ": targets must have shape (N,) with N = hidden.size(0) = ", num_tokens,
                    ", got shape ", targets.sizes());
  TORCH_CHECK_TYPE(targets.scalar_type() == at::kLong, op_name, ": targets must be int64, got ",
                   dtype_name(targets.scalar_type()));
  check_same_device(op_name, "targets", targets, hidden);

  TORCH_CHECK_VALUE(chunk_size > 0, op_name, ": chunk_size must be positive, got ", chunk_size);
}

void check_backward_arguments(const at::Tensor& grad_token_logps, const at::Tensor& hidden,
                              const at::Tensor& logsumexp) {
  constexpr const char* op_name = "fused_linear_logprobs_backward";
  const int64_t num_tokens = hidden.size(0);
  TORCH_CHECK_VALUE(grad_token_logps.dim() == 1 && grad_token_logps.size(0) == num_tokens, op_name,
                    ": grad_token_logps must have shape (N,) with N = hidden.size(0) = ",
                    num_tokens, ", got shape ", grad_token_logps.sizes());
  TORCH_CHECK_VALUE(logsumexp.dim() == 1 && logsumexp.size(0) == num_tokens, op_name,
                    ": logsumexp must have shape (N,) with N = hidden.size(0) = ", num_tokens,
                    ", got shape ", logsumexp.sizes());
  check_float_dtype(op_name, "grad_token_logps", grad_token_logps);
  check_float_dtype(op_name, "logsumexp", logsumexp);
  check_same_device(op_name, "grad_token_logps", grad_token_logps, hidden);
  check_same_device(op_name, "logsumexp", logsumexp, hidden);
}

}  // namespace pyalign

// Other op files in csrc/ must add their schemas with TORCH_LIBRARY_FRAGMENT(pyalign, m),
// because a namespace can have only one TORCH_LIBRARY block.
TORCH_LIBRARY(pyalign, m) {
  m.def(
      "fused_linear_logprobs(Tensor hidden, Tensor weight, Tensor? bias, Tensor targets, "
      "int chunk_size, bool compute_entropy=False, bool compute_hidden_jacobian=False) "
      "-> (Tensor token_logps, Tensor logsumexp, Tensor entropy, Tensor hidden_jacobian)");
  m.def(
      "fused_linear_logprobs_backward(Tensor grad_token_logps, Tensor hidden, Tensor weight, "
      "Tensor? bias, Tensor targets, Tensor logsumexp, int chunk_size, bool needs_hidden_grad, "
      "bool needs_weight_grad, bool needs_bias_grad) "
      "-> (Tensor? grad_hidden, Tensor? grad_weight, Tensor? grad_bias)");
}
