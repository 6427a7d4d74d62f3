// Declarations shared by the device implementations of pyalign::fused_linear_logprobs.
//
// logprobs.cpp defines the schemas and the argument checks; each device folder (cpu/, and
// later cuda/) registers its kernels with TORCH_LIBRARY_IMPL(pyalign, <Device>, m).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

namespace pyalign {

// Returns the Python spelling of a dtype ("bfloat16", "int64"), which users know from torch.
std::string dtype_name(at::ScalarType dtype);

// Returns the dtype in which the op accumulates logits and gradients, which is also the dtype
// of its outputs: float64 when hidden or weight is float64, float32 otherwise.
at::ScalarType accumulate_dtype(const at::Tensor& hidden, const at::Tensor& weight);

// Checks the shapes, dtypes and devices of the arguments common to the forward and backward
// ops. Shape and value errors raise ValueError and dtype errors raise TypeError, with a message
// that names the argument and what was expected. Each device implementation checks the target
// values itself.
void check_logprobs_arguments(const char* op_name, const at::Tensor& hidden,
                              const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              const at::Tensor& targets, int64_t chunk_size);

// Checks the backward-only arguments: the incoming gradient and the forward's logsumexp, both
// floating point with shape (N,).
void check_backward_arguments(const at::Tensor& grad_token_logps, const at::Tensor& hidden,
                              const at::Tensor& logsumexp);

}  // namespace pyalign
