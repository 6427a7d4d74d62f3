// CUDA kernels of pyalign::fused_linear_logprobs and its backward.
//
// NOTE: these kernels compile in CI (bench/build_cuda_ops.sh) but have not yet run on a GPU.
// bench/gpu_check.sh is the prepared run of their tests there.
//
// Both ops walk the tokens in chunks of chunk_size rows. For each chunk, cuBLAS computes the
// chunk's float32 logits against the whole vocabulary, through ATen's at::mm_out and addmm_out
// on the current stream. Then one fused kernel, with a thread block per row, reduces each row to
// its logsumexp, target log-probability and entropy (forward), or turns it into d loss / d logits
// (backward). The chunk's logits are the only large buffer: chunk_size x V float32 values, plus
// chunk_size x V values of the matrix-product dtype for the gradient or probabilities.
//
// bfloat16 and float16 products run on tensor cores with float32 output and accumulation
// (ATen's mm.dtype overloads). A weight whose dtype differs from the hidden states' is converted
// once per call to the accumulator dtype.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <tuple>

#include "../logprobs.h"

namespace pyalign {
namespace {

constexpr int kThreads = 512;  // threads per row; a multiple of the warp size
constexpr int kWarpSize = 32;

__device__ __forceinline__ float device_exp(float x) { return __expf(x); }
__device__ __forceinline__ double device_exp(double x) { return ::exp(x); }
__device__ __forceinline__ float device_log(float x) { return __logf(x); }
__device__ __forceinline__ double device_log(double x) { return ::log(x); }

template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

template <typename T>
__device__ __forceinline__ T warp_max(T value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const T other = __shfl_xor_sync(0xffffffffu, value, offset);
    value = other > value ? other : value;
  }
  return value;
}

// Reduces over the thread block and returns the result to every thread. `shared` has room for
// one value per warp.
template <typename T, bool kMax>
__device__ T block_reduce(T value, T* shared) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  value = kMax ? warp_max(value) : warp_sum(value);
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  const int warps = blockDim.x / kWarpSize;
  T total = lane < warps ? shared[lane] : (kMax ? -std::numeric_limits<T>::infinity() : T(0));
  total = kMax ? warp_max(total) : warp_sum(total);
  __syncthreads();  // `shared` may be reused by the next reduction
  return total;
}

template <typename acc_t>
__device__ __forceinline__ acc_t logit_at(const acc_t* row, const acc_t* bias, int64_t j) {
  return bias == nullptr ? row[j] : row[j] + bias[j];
}

// One block per row of a chunk's logits (rows, width). Writes the row's logsumexp and target
// log-probability, optionally its entropy, and with kWriteProbs the softmax probabilities in
// the product dtype (for the hidden Jacobian).
template <typename acc_t, typename prob_t, bool kWriteProbs>
__global__ void row_statistics_kernel(const acc_t* __restrict__ logits, int64_t width,
                                      const acc_t* __restrict__ bias,
                                      const int64_t* __restrict__ targets,
                                      acc_t* __restrict__ token_logps,
                                      acc_t* __restrict__ logsumexp, acc_t* __restrict__ entropy,
                                      prob_t* __restrict__ probs) {
  __shared__ acc_t shared[kThreads / kWarpSize];
  const int64_t row_index = blockIdx.x;
  const acc_t* row = logits + row_index * width;

  acc_t maximum = -std::numeric_limits<acc_t>::infinity();
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
    const acc_t value = logit_at(row, bias, j);
    maximum = value > maximum ? value : maximum;
  }
  maximum = block_reduce<acc_t, true>(maximum, shared);

  acc_t sum = 0;
  acc_t weighted = 0;  // sum_j exp(z_j - m) (z_j - m), for the entropy
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
    const acc_t centred = logit_at(row, bias, j) - maximum;
    const acc_t e = device_exp(centred);
    sum += e;
    // A -inf logit (a masked token) has e = 0 and adds nothing, rather than 0 * -inf.
    weighted += e > acc_t(0) ? e * centred : acc_t(0);
  }
  sum = block_reduce<acc_t, false>(sum, shared);
  if (entropy != nullptr) {
    weighted = block_reduce<acc_t, false>(weighted, shared);
  }
  const acc_t log_sum = device_log(sum);
  const acc_t lse = maximum + log_sum;

  if (kWriteProbs) {
    prob_t* prob_row = probs + row_index * width;
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      prob_row[j] = static_cast<prob_t>(device_exp(logit_at(row, bias, j) - lse));
    }
  }
  if (threadIdx.x == 0) {
    token_logps[row_index] = logit_at(row, bias, targets[row_index]) - lse;
    logsumexp[row_index] = lse;
    if (entropy != nullptr) entropy[row_index] = log_sum - weighted / sum;
  }
}

// One block per row: grad_logits = grad * (onehot(target) - exp(logits - logsumexp)), in the
// product dtype. grad_logits may alias logits when the dtypes match.
template <typename acc_t, typename grad_t>
__global__ void logits_grad_kernel(const acc_t* logits, int64_t width,
                                   const acc_t* __restrict__ bias,
                                   const int64_t* __restrict__ targets,
                                   const acc_t* __restrict__ logsumexp,
                                   const acc_t* __restrict__ grad_token_logps,
                                   grad_t* grad_logits) {
  const int64_t row_index = blockIdx.x;
  const acc_t* row = logits + row_index * width;
  grad_t* grad_row = grad_logits + row_index * width;
  const acc_t grad = grad_token_logps[row_index];
  const acc_t lse = logsumexp[row_index];
  const int64_t target = targets[row_index];
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
    acc_t value = -grad * device_exp(logit_at(row, bias, j) - lse);
    if (j == target) value += grad;
    grad_row[j] = static_cast<grad_t>(value);
  }
}

void check_targets_in_range(const char* op_name, const at::Tensor& targets, int64_t vocab_size) {
  if (targets.numel() == 0) return;
  // One device-to-host copy per call; an id outside [0, V) would read out of bounds.
  const auto [low, high] = at::aminmax(targets);
  const int64_t low_value = low.item<int64_t>();
  const int64_t high_value = high.item<int64_t>();
  TORCH_CHECK_VALUE(low_value >= 0 && high_value < vocab_size, op_name,
                    ": targets must be in the vocabulary [0, ", vocab_size, "), got values from ",
                    low_value, " to ", high_value);
}

// The operands of the chunk products and the dtypes they run in.
struct Operands {
  at::Tensor hidden;   // (N, H), contiguous, in mm_dtype
  at::Tensor weight;   // (V, H), contiguous, in mm_dtype
  at::Tensor targets;  // (N,), contiguous
  at::Tensor bias;     // (V,) in acc_dtype, or undefined
  at::ScalarType acc_dtype, mm_dtype;
};

Operands prepare_operands(const char* op_name, const at::Tensor& hidden, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const at::Tensor& targets,
                          int64_t chunk_size) {
  check_logprobs_arguments(op_name, hidden, weight, bias, targets, chunk_size);
  Operands operands;
  operands.acc_dtype = accumulate_dtype(hidden, weight);
  operands.mm_dtype =
      hidden.scalar_type() == weight.scalar_type() ? hidden.scalar_type() : operands.acc_dtype;
  operands.hidden = hidden.to(operands.mm_dtype).contiguous();
  operands.weight = weight.to(operands.mm_dtype).contiguous();
  operands.targets = targets.contiguous();
  check_targets_in_range(op_name, operands.targets, weight.size(0));
  if (bias.has_value()) {
    operands.bias = bias->to(operands.acc_dtype).contiguous();
  }
  return operands;
}

// logits = hidden_chunk @ weight.T in acc_dtype; the bias is added by the row kernels.
void chunk_logits(at::Tensor& logits, const at::Tensor& hidden_chunk, const Operands& operands) {
  if (operands.mm_dtype == operands.acc_dtype) {
    at::mm_out(logits, hidden_chunk, operands.weight.t());
  } else {
    at::mm_out(logits, hidden_chunk, operands.weight.t(), operands.acc_dtype);
  }
}

template <typename acc_t>
const acc_t* bias_pointer(const Operands& operands) {
  return operands.bias.defined() ? operands.bias.data_ptr<acc_t>() : nullptr;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_linear_logprobs_cuda(
    const at::Tensor& hidden, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& targets, int64_t chunk_size, bool compute_entropy,
    bool compute_hidden_jacobian) {
  const c10::cuda::CUDAGuard device_guard(hidden.device());
  const Operands operands =
      prepare_operands("fused_linear_logprobs", hidden, weight, bias, targets, chunk_size);
  const auto acc_options = hidden.options().dtype(operands.acc_dtype);
  const int64_t num_tokens = hidden.size(0);
  const int64_t hidden_size = hidden.size(1);
  const int64_t vocab_size = weight.size(0);
  const int64_t max_rows = std::min(chunk_size, num_tokens);

  at::Tensor token_logps = at::empty({num_tokens}, acc_options);                    // (N,)
  at::Tensor logsumexp = at::empty({num_tokens}, acc_options);                      // (N,)
  at::Tensor entropy = at::empty({compute_entropy ? num_tokens : 0}, acc_options);  // (N,)
  at::Tensor jacobian =
      at::empty({compute_hidden_jacobian ? num_tokens : 0, hidden_size}, acc_options);  // (N, H)
  at::Tensor logits_buffer = at::empty({max_rows, vocab_size}, acc_options);            // (C, V)
  at::Tensor probs_buffer;                                                              // (C, V)
  if (compute_hidden_jacobian) {
    probs_buffer = at::empty({max_rows, vocab_size}, hidden.options().dtype(operands.mm_dtype));
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  for (int64_t start = 0; start < num_tokens; start += chunk_size) {
    const int64_t rows = std::min(chunk_size, num_tokens - start);
    at::Tensor logits = logits_buffer.narrow(0, 0, rows);  // (C, V)
    chunk_logits(logits, operands.hidden.narrow(0, start, rows), operands);

    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, operands.mm_dtype, "fused_linear_logprobs_cuda", [&] {
          using prob_t = scalar_t;
          AT_DISPATCH_FLOATING_TYPES(operands.acc_dtype, "fused_linear_logprobs_cuda_acc", [&] {
            using acc_t = scalar_t;
            acc_t* entropy_out = compute_entropy ? entropy.data_ptr<acc_t>() + start : nullptr;
            const auto launch = [&](auto write_probs) {
              constexpr bool kWriteProbs = decltype(write_probs)::value;
              prob_t* probs = kWriteProbs ? probs_buffer.data_ptr<prob_t>() : nullptr;
              row_statistics_kernel<acc_t, prob_t, kWriteProbs><<<rows, kThreads, 0, stream>>>(
                  logits.data_ptr<acc_t>(), vocab_size, bias_pointer<acc_t>(operands),
                  operands.targets.data_ptr<int64_t>() + start,
                  token_logps.data_ptr<acc_t>() + start, logsumexp.data_ptr<acc_t>() + start,
                  entropy_out, probs);
              C10_CUDA_KERNEL_LAUNCH_CHECK();
            };
            if (compute_hidden_jacobian) {
              launch(std::true_type{});
            } else {
              launch(std::false_type{});
            }
          });
        });

    if (compute_hidden_jacobian) {
      // jacobian_i = W_{y_i} - sum_v p_iv W_v
      at::Tensor chunk_jacobian = jacobian.narrow(0, start, rows);  // (C, H)
      const at::Tensor probs = probs_buffer.narrow(0, 0, rows);     // (C, V)
      if (operands.mm_dtype == operands.acc_dtype) {
        at::mm_out(chunk_jacobian, probs, operands.weight);
      } else {
        at::mm_out(chunk_jacobian, probs, operands.weight, operands.acc_dtype);
      }
      const at::Tensor target_rows =
          operands.weight.index_select(0, operands.targets.narrow(0, start, rows));
      chunk_jacobian.neg_().add_(target_rows.to(operands.acc_dtype));
    }
  }
  return {token_logps, logsumexp, entropy, jacobian};
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
fused_linear_logprobs_backward_cuda(const at::Tensor& grad_token_logps, const at::Tensor& hidden,
                                    const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                    const at::Tensor& targets, const at::Tensor& logsumexp,
                                    int64_t chunk_size, bool needs_hidden_grad,
                                    bool needs_weight_grad, bool needs_bias_grad) {
  constexpr const char* op_name = "fused_linear_logprobs_backward";
  const c10::cuda::CUDAGuard device_guard(hidden.device());
  const Operands operands = prepare_operands(op_name, hidden, weight, bias, targets, chunk_size);
  check_backward_arguments(grad_token_logps, hidden, logsumexp);
  needs_bias_grad = needs_bias_grad && bias.has_value();

  const auto acc_options = hidden.options().dtype(operands.acc_dtype);
  const int64_t num_tokens = hidden.size(0);
  const int64_t hidden_size = hidden.size(1);
  const int64_t vocab_size = weight.size(0);
  const int64_t max_rows = std::min(chunk_size, num_tokens);
  // The incoming gradient is often an expanded view (the backward of a sum), so copy it.
  const at::Tensor grad_acc = grad_token_logps.to(operands.acc_dtype).contiguous();  // (N,)
  const at::Tensor logsumexp_acc = logsumexp.to(operands.acc_dtype).contiguous();    // (N,)

  at::Tensor grad_hidden;
  at::Tensor grad_weight_acc;
  at::Tensor grad_bias_acc;
  if (needs_hidden_grad) {
    grad_hidden = at::empty({num_tokens, hidden_size}, hidden.options().dtype(operands.mm_dtype));
  }
  if (needs_weight_grad) {
    grad_weight_acc = at::zeros({vocab_size, hidden_size}, acc_options);  // (V, H)
  }
  if (needs_bias_grad) {
    grad_bias_acc = at::zeros({vocab_size}, acc_options);  // (V,)
  }
  at::Tensor logits_buffer = at::empty({max_rows, vocab_size}, acc_options);  // (C, V)
  // The gradient of the logits in the product dtype; it reuses the logits buffer when that is
  // the same dtype.
  at::Tensor grad_logits_buffer =
      operands.mm_dtype == operands.acc_dtype
          ? logits_buffer
          : at::empty({max_rows, vocab_size}, hidden.options().dtype(operands.mm_dtype));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  for (int64_t start = 0; start < num_tokens; start += chunk_size) {
    const int64_t rows = std::min(chunk_size, num_tokens - start);
    const at::Tensor hidden_chunk = operands.hidden.narrow(0, start, rows);  // (C, H)
    at::Tensor logits = logits_buffer.narrow(0, 0, rows);                    // (C, V)
    at::Tensor grad_logits = grad_logits_buffer.narrow(0, 0, rows);          // (C, V)
    chunk_logits(logits, hidden_chunk, operands);

    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, operands.mm_dtype, "fused_linear_logprobs_backward_cuda", [&] {
          using grad_t = scalar_t;
          AT_DISPATCH_FLOATING_TYPES(operands.acc_dtype, "logits_grad_acc", [&] {
            using acc_t = scalar_t;
            logits_grad_kernel<acc_t, grad_t><<<rows, kThreads, 0, stream>>>(
                logits.data_ptr<acc_t>(), vocab_size, bias_pointer<acc_t>(operands),
                operands.targets.data_ptr<int64_t>() + start,
                logsumexp_acc.data_ptr<acc_t>() + start, grad_acc.data_ptr<acc_t>() + start,
                grad_logits.data_ptr<grad_t>());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
        });

    if (needs_hidden_grad) {
      at::Tensor grad_hidden_chunk = grad_hidden.narrow(0, start, rows);  // (C, H)
      at::mm_out(grad_hidden_chunk, grad_logits, operands.weight);
    }
    if (needs_weight_grad) {
      // NOTE: the float32 accumulation of bfloat16/float16 products relies on addmm's out_dtype
      // overload accepting a float32 `self`; bench/gpu_check.sh exercises it on a GPU.
      if (operands.mm_dtype == operands.acc_dtype) {
        grad_weight_acc.addmm_(grad_logits.t(), hidden_chunk);
      } else {
        at::addmm_out(grad_weight_acc, grad_weight_acc, grad_logits.t(), hidden_chunk,
                      operands.acc_dtype);
      }
    }
    if (needs_bias_grad) {
      grad_bias_acc.add_(at::sum(grad_logits, {0}, false, operands.acc_dtype));
    }
  }

  std::optional<at::Tensor> grad_hidden_out;
  std::optional<at::Tensor> grad_weight_out;
  std::optional<at::Tensor> grad_bias_out;
  if (needs_hidden_grad) grad_hidden_out = grad_hidden.to(hidden.scalar_type());
  if (needs_weight_grad) grad_weight_out = grad_weight_acc.to(weight.scalar_type());
  if (needs_bias_grad) grad_bias_out = grad_bias_acc.to(bias->scalar_type());
  return {grad_hidden_out, grad_weight_out, grad_bias_out};
}

}  // namespace pyalign

TORCH_LIBRARY_IMPL(pyalign, CUDA, m) {
  m.impl("fused_linear_logprobs", &pyalign::fused_linear_logprobs_cuda);
  m.impl("fused_linear_logprobs_backward", &pyalign::fused_linear_logprobs_backward_cuda);
}
