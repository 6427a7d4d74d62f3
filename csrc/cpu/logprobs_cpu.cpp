// CPU kernels of pyalign::fused_linear_logprobs and its backward.
//
// Both ops walk the tokens in chunks of chunk_size rows, and each chunk walks the vocabulary in
// blocks of kVocabBlock columns, so the scratch buffer holds chunk_size x kVocabBlock
// accumulator values whatever V is. The products go through ATen (at::mm_out and addmm, so the
// BLAS torch was built with). A low-precision weight block is converted to the accumulator dtype
// just before its product. at::parallel_for splits the per-row softmax work across torch's
// intra-op thread pool, whose size is at::get_num_threads().
//
// The forward op keeps, per row, a running maximum m, the sum s = sum_j exp(z_j - m) and, for
// the optional outputs, the sum t = sum_j exp(z_j - m) (z_j - m) (entropy = log s - t / s) and
// the vector S = sum_j exp(z_j - m) W_j (the hidden Jacobian is W_y - S / s). When a block
// raises m to m', the running values are rescaled by exp(m - m'), and t also gains
// (m - m') s: exp(z - m') (z - m') = exp(m - m') exp(z - m) ((z - m) + (m - m')).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>

#include "../logprobs.h"

namespace pyalign {
namespace {

// Columns of logits computed by one matrix product. 4096 float32 columns of a 1024-row chunk
// are 16 MiB, and products of that size keep the BLAS near its peak.
constexpr int64_t kVocabBlock = 4096;

// The per-row loops below are compiled once per x86-64 level (AVX-512, AVX2 + FMA, baseline)
// and the best one for the running processor is picked when the library loads (GCC's
// target_clones, through an ifunc). On one AMD EPYC core the AVX-512 loops ran about 9 times as
// fast as the baseline SSE2 ones. Other compilers and platforms get the baseline build.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PYALIGN_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PYALIGN_CPU_CLONES
#endif
// Helpers inlined into each clone, so that they are compiled for its instruction set.
#define PYALIGN_INLINE [[gnu::always_inline]] inline

// std::bit_cast is C++20, and older torch builds compile extensions as C++17; GCC (11 and
// later) and Clang have the builtin in either mode.
template <typename To, typename From>
PYALIGN_INLINE To bit_cast(From value) {
  return __builtin_bit_cast(To, value);
}

// exp(x) for float32, accurate to about 2 ulp, written so that the compiler vectorises the
// loops that call it (std::exp is a scalar library call): no branches, bit casts instead of
// memcpy. Cody-Waite reduction x = n ln 2 + r with |r| <= ln 2 / 2, the Cephes expf polynomial
// for exp(r), and 2^n assembled in the exponent bits. Arguments below -87.3 return about 1e-38
// instead of 0, which is negligible in sums of probabilities; NaN propagates.
constexpr float kLowestExponent = -87.3f;

PYALIGN_INLINE float exp_approx(float x) {
  constexpr float kLowest = kLowestExponent;
  constexpr float kHighest = 88.3f;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2High = 0.693359375f;
  constexpr float kLn2Low = -2.12194440e-4f;
  constexpr float kRoundingShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  constexpr int32_t kRoundingShiftBits = 0x4B400000;
  x = std::min(std::max(x, kLowest), kHighest);

  const float shifted = x * kLog2e + kRoundingShift;
  const float n = shifted - kRoundingShift;
  const float r = (x - n * kLn2High) - n * kLn2Low;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;

  const int32_t exponent = bit_cast<int32_t>(shifted) - kRoundingShiftBits;
  return p * bit_cast<float>((exponent + 127) << 23);
}

// float64 is for tests and gradcheck, where accuracy matters more than speed.
PYALIGN_INLINE double exp_approx(double x) { return std::exp(x); }

template <typename scalar_t>
PYALIGN_INLINE scalar_t row_maximum_loop(const scalar_t* row, int64_t width) {
  scalar_t maximum = -std::numeric_limits<scalar_t>::infinity();
#pragma omp simd reduction(max : maximum)
  for (int64_t j = 0; j < width; ++j) {
    maximum = row[j] > maximum ? row[j] : maximum;
  }
  return maximum;
}

// Returns sum_j exp(row_j - shift). With kWeighted it also writes sum_j exp(row_j - shift)
// (row_j - shift) to *weighted_sum. With kStore it replaces each row_j by exp(row_j - shift).
template <typename scalar_t, bool kWeighted, bool kStore>
PYALIGN_INLINE scalar_t exp_sum_loop(scalar_t* row, int64_t width, scalar_t shift,
                                     scalar_t* weighted_sum) {
  scalar_t sum = 0;
  scalar_t weighted = 0;
#pragma omp simd reduction(+ : sum, weighted)
  for (int64_t j = 0; j < width; ++j) {
    const scalar_t centred = row[j] - shift;
    const scalar_t e = exp_approx(centred);
    sum += e;
    // exp_approx(-inf) is about 1e-38, not 0, so the factor is bounded: a -inf logit (a masked
    // token) then adds nothing instead of -inf.
    if (kWeighted) weighted += e * std::max(centred, scalar_t(kLowestExponent));
    if (kStore) row[j] = e;
  }
  if (kWeighted) *weighted_sum = weighted;
  return sum;
}

// row_j = -grad * exp(row_j - logsumexp), the softmax part of d loss / d logits.
template <typename scalar_t>
PYALIGN_INLINE void softmax_grad_loop(scalar_t* row, int64_t width, scalar_t grad,
                                      scalar_t logsumexp) {
#pragma omp simd
  for (int64_t j = 0; j < width; ++j) {
    row[j] = -grad * exp_approx(row[j] - logsumexp);
  }
}

PYALIGN_CPU_CLONES float row_maximum_float(const float* row, int64_t width) {
  return row_maximum_loop(row, width);
}

PYALIGN_CPU_CLONES float exp_sum_float(float* row, int64_t width, float shift, bool weighted,
                                       bool store, float* weighted_sum) {
  if (weighted && store) return exp_sum_loop<float, true, true>(row, width, shift, weighted_sum);
  if (weighted) return exp_sum_loop<float, true, false>(row, width, shift, weighted_sum);
  if (store) return exp_sum_loop<float, false, true>(row, width, shift, weighted_sum);
  return exp_sum_loop<float, false, false>(row, width, shift, weighted_sum);
}

PYALIGN_CPU_CLONES void softmax_grad_float(float* row, int64_t width, float grad, float logsumexp) {
  softmax_grad_loop(row, width, grad, logsumexp);
}

template <typename scalar_t>
scalar_t row_maximum(const scalar_t* row, int64_t width) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return row_maximum_float(row, width);
  } else {
    return row_maximum_loop(row, width);
  }
}

template <typename scalar_t, bool kWeighted, bool kStore>
scalar_t exp_sum(scalar_t* row, int64_t width, scalar_t shift, scalar_t* weighted_sum) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return exp_sum_float(row, width, shift, kWeighted, kStore, weighted_sum);
  } else {
    return exp_sum_loop<scalar_t, kWeighted, kStore>(row, width, shift, weighted_sum);
  }
}

template <typename scalar_t>
void softmax_grad(scalar_t* row, int64_t width, scalar_t grad, scalar_t logsumexp) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    softmax_grad_float(row, width, grad, logsumexp);
  } else {
    softmax_grad_loop(row, width, grad, logsumexp);
  }
}

// The running per-row state of the forward pass over vocabulary blocks, all (rows,) arrays.
template <typename scalar_t>
struct RowState {
  scalar_t* maximum;       // m, -inf before the first block
  scalar_t* sum;           // s
  scalar_t* target_logit;  // z_y, once the block holding y is seen
  scalar_t* weighted_sum;  // t, or nullptr without entropy
  scalar_t* rescale;       // exp(m_old - m) of the last block, or nullptr without Jacobian
};

template <typename scalar_t, bool kWeighted, bool kStore>
void fold_block_rows(scalar_t* logits, int64_t rows, int64_t width, int64_t vocab_start,
                     const int64_t* targets, const RowState<scalar_t>& state) {
  const int64_t grain =
      std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, width));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      scalar_t* row = logits + i * width;
      const int64_t local_target = targets[i] - vocab_start;
      if (local_target >= 0 && local_target < width) {
        state.target_logit[i] = row[local_target];
      }

      const scalar_t old_maximum = state.maximum[i];
      const scalar_t maximum = std::max(old_maximum, row_maximum(row, width));
      if (maximum == -std::numeric_limits<scalar_t>::infinity()) {
        // Every logit so far is -inf (masked): this block adds no probability, and
        // exp(-inf - (-inf)) would be NaN.
        if (kStore) {
          std::fill(row, row + width, scalar_t(0));
          state.rescale[i] = 0;
        }
        continue;
      }
      // The first block starts from sum 0 and maximum -inf; its rescale factor is irrelevant.
      const scalar_t rescale = state.sum[i] == 0 ? scalar_t(0) : std::exp(old_maximum - maximum);
      scalar_t block_weighted = 0;
      const scalar_t block_sum =
          exp_sum<scalar_t, kWeighted, kStore>(row, width, maximum, &block_weighted);
      if (kWeighted) {
        // Guarded because (old_maximum - maximum) is -inf before the first block.
        const scalar_t carried =
            state.sum[i] == 0
                ? scalar_t(0)
                : rescale * (state.weighted_sum[i] + (old_maximum - maximum) * state.sum[i]);
        state.weighted_sum[i] = carried + block_weighted;
      }
      state.sum[i] = state.sum[i] * rescale + block_sum;
      state.maximum[i] = maximum;
      if (kStore) state.rescale[i] = rescale;
    }
  });
}

template <typename scalar_t>
void fold_block(scalar_t* logits, int64_t rows, int64_t width, int64_t vocab_start,
                const int64_t* targets, const RowState<scalar_t>& state) {
  const bool weighted = state.weighted_sum != nullptr;
  const bool store = state.rescale != nullptr;
  if (weighted && store) {
    fold_block_rows<scalar_t, true, true>(logits, rows, width, vocab_start, targets, state);
  } else if (weighted) {
    fold_block_rows<scalar_t, true, false>(logits, rows, width, vocab_start, targets, state);
  } else if (store) {
    fold_block_rows<scalar_t, false, true>(logits, rows, width, vocab_start, targets, state);
  } else {
    fold_block_rows<scalar_t, false, false>(logits, rows, width, vocab_start, targets, state);
  }
}

// Replaces one vocabulary block of logits (rows, width) in place with the gradient of the loss
// with respect to them: grad_i * (onehot(target_i) - exp(logits_i - logsumexp_i)).
template <typename scalar_t>
void logits_to_grad(scalar_t* logits, int64_t rows, int64_t width, int64_t vocab_start,
                    const int64_t* targets, const scalar_t* logsumexp,
                    const scalar_t* grad_token_logps) {
  const int64_t grain =
      std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, width));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      scalar_t* row = logits + i * width;
      const scalar_t grad = grad_token_logps[i];
      softmax_grad(row, width, grad, logsumexp[i]);
      const int64_t local_target = targets[i] - vocab_start;
      if (local_target >= 0 && local_target < width) {
        row[local_target] += grad;
      }
    }
  });
}

void check_targets_in_range(const char* op_name, const at::Tensor& targets, int64_t vocab_size) {
  const int64_t* ids = targets.data_ptr<int64_t>();
  for (int64_t i = 0; i < targets.numel(); ++i) {
    TORCH_CHECK_VALUE(ids[i] >= 0 && ids[i] < vocab_size, op_name, ": targets[", i, "] = ", ids[i],
                      " is outside the vocabulary [0, ", vocab_size, ")");
  }
}

// Writes hidden_acc @ weight_block.T + bias_block into out (rows, width).
void block_logits(at::Tensor& out, const at::Tensor& hidden_acc, const at::Tensor& weight_block,
                  const std::optional<at::Tensor>& bias_acc, int64_t vocab_start) {
  if (bias_acc.has_value()) {
    const at::Tensor bias_block = bias_acc->narrow(0, vocab_start, out.size(1));
    at::addmm_out(out, bias_block, hidden_acc, weight_block.t());
  } else {
    at::mm_out(out, hidden_acc, weight_block.t());
  }
}

// The inputs of both ops, contiguous, with the bias in the accumulator dtype.
struct Inputs {
  at::Tensor hidden, weight, targets;
  std::optional<at::Tensor> bias_acc;
  at::ScalarType acc_dtype;
  int64_t block_size;
};

Inputs prepare_inputs(const char* op_name, const at::Tensor& hidden, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, const at::Tensor& targets,
                      int64_t chunk_size) {
  check_logprobs_arguments(op_name, hidden, weight, bias, targets, chunk_size);
  Inputs inputs;
  inputs.targets = targets.contiguous();
  check_targets_in_range(op_name, inputs.targets, weight.size(0));
  inputs.acc_dtype = accumulate_dtype(hidden, weight);
  inputs.hidden = hidden.contiguous();
  inputs.weight = weight.contiguous();
  if (bias.has_value()) {
    inputs.bias_acc = bias->to(inputs.acc_dtype).contiguous();  // (V,)
  }
  inputs.block_size = std::min(kVocabBlock, weight.size(0));
  return inputs;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_linear_logprobs_cpu(
    const at::Tensor& hidden, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& targets, int64_t chunk_size, bool compute_entropy,
    bool compute_hidden_jacobian) {
  const Inputs in =
      prepare_inputs("fused_linear_logprobs", hidden, weight, bias, targets, chunk_size);
  const auto acc_options = hidden.options().dtype(in.acc_dtype);
  const int64_t num_tokens = hidden.size(0);
  const int64_t hidden_size = hidden.size(1);
  const int64_t vocab_size = weight.size(0);

  at::Tensor token_logps = at::empty({num_tokens}, acc_options);                    // (N,)
  at::Tensor logsumexp = at::empty({num_tokens}, acc_options);                      // (N,)
  at::Tensor row_sum = at::zeros({num_tokens}, acc_options);                        // (N,)
  at::Tensor entropy = at::zeros({compute_entropy ? num_tokens : 0}, acc_options);  // (N,)
  at::Tensor jacobian =
      at::empty({compute_hidden_jacobian ? num_tokens : 0, hidden_size}, acc_options);  // (N, H)
  const int64_t max_rows = std::min(chunk_size, num_tokens);
  at::Tensor logits_buffer = at::empty({max_rows * in.block_size}, acc_options);  // (C x block)
  at::Tensor weighted_exp_sum;  // (C, H), S of the current chunk
  at::Tensor rescale;           // (C,)
  if (compute_hidden_jacobian) {
    weighted_exp_sum = at::empty({max_rows, hidden_size}, acc_options);
    rescale = at::empty({max_rows}, acc_options);
  }

  // logsumexp holds the running row maximum until the last block is folded in.
  logsumexp.fill_(-std::numeric_limits<double>::infinity());

  for (int64_t start = 0; start < num_tokens; start += chunk_size) {
    const int64_t rows = std::min(chunk_size, num_tokens - start);
    const at::Tensor hidden_acc = in.hidden.narrow(0, start, rows).to(in.acc_dtype);  // (C, H)
    at::Tensor chunk_sum;
    if (compute_hidden_jacobian) {
      chunk_sum = weighted_exp_sum.narrow(0, 0, rows).zero_();  // (C, H)
    }

    for (int64_t vocab_start = 0; vocab_start < vocab_size; vocab_start += in.block_size) {
      const int64_t width = std::min(in.block_size, vocab_size - vocab_start);
      const at::Tensor weight_block =
          in.weight.narrow(0, vocab_start, width).to(in.acc_dtype);  // (block, H)
      at::Tensor logits = logits_buffer.narrow(0, 0, rows * width).view({rows, width});
      block_logits(logits, hidden_acc, weight_block, in.bias_acc, vocab_start);

      AT_DISPATCH_FLOATING_TYPES(in.acc_dtype, "fused_linear_logprobs_cpu", [&] {
        const RowState<scalar_t> state{
            logsumexp.data_ptr<scalar_t>() + start, row_sum.data_ptr<scalar_t>() + start,
            token_logps.data_ptr<scalar_t>() + start,
            compute_entropy ? entropy.data_ptr<scalar_t>() + start : nullptr,
            compute_hidden_jacobian ? rescale.data_ptr<scalar_t>() : nullptr};
        fold_block<scalar_t>(logits.data_ptr<scalar_t>(), rows, width, vocab_start,
                             in.targets.data_ptr<int64_t>() + start, state);
      });
      if (compute_hidden_jacobian) {
        // The logits buffer now holds exp(z - m) with the block's new maximum m.
        chunk_sum.mul_(rescale.narrow(0, 0, rows).unsqueeze(1));
        chunk_sum.addmm_(logits, weight_block);
      }
    }

    if (compute_hidden_jacobian) {
      const at::Tensor chunk_targets = in.targets.narrow(0, start, rows);
      const at::Tensor target_rows = in.weight.index_select(0, chunk_targets).to(in.acc_dtype);
      const at::Tensor sums = row_sum.narrow(0, start, rows).unsqueeze(1);
      at::Tensor chunk_jacobian = jacobian.narrow(0, start, rows);  // (C, H)
      at::sub_out(chunk_jacobian, target_rows, chunk_sum.div_(sums));
    }
  }

  // Until now token_logps held the target logits, logsumexp the row maxima and entropy the
  // sums t.
  const at::Tensor log_sum = row_sum.log();
  if (compute_entropy) {
    entropy.neg_().div_(row_sum).add_(log_sum);
  }
  logsumexp.add_(log_sum);
  token_logps.sub_(logsumexp);
  return {token_logps, logsumexp, entropy, jacobian};
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
fused_linear_logprobs_backward_cpu(const at::Tensor& grad_token_logps, const at::Tensor& hidden,
                                   const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                   const at::Tensor& targets, const at::Tensor& logsumexp,
                                   int64_t chunk_size, bool needs_hidden_grad,
                                   bool needs_weight_grad, bool needs_bias_grad) {
  constexpr const char* op_name = "fused_linear_logprobs_backward";
  const Inputs in = prepare_inputs(op_name, hidden, weight, bias, targets, chunk_size);
  check_backward_arguments(grad_token_logps, hidden, logsumexp);
  needs_bias_grad = needs_bias_grad && bias.has_value();

  const auto acc_options = hidden.options().dtype(in.acc_dtype);
  const int64_t num_tokens = hidden.size(0);
  const int64_t hidden_size = hidden.size(1);
  const int64_t vocab_size = weight.size(0);
  // The incoming gradient is often an expanded view (the backward of a sum), so copy it.
  const at::Tensor grad_acc = grad_token_logps.to(in.acc_dtype).contiguous();  // (N,)
  const at::Tensor logsumexp_acc = logsumexp.to(in.acc_dtype).contiguous();    // (N,)

  // The LM head gradients are accumulated over all chunks in the accumulator dtype, so a
  // bfloat16 head costs a float32 (V, H) buffer here.
  at::Tensor grad_hidden;
  at::Tensor grad_hidden_buffer;
  at::Tensor grad_weight_acc;
  at::Tensor grad_bias_acc;
  const int64_t max_rows = std::min(chunk_size, num_tokens);
  if (needs_hidden_grad) {
    grad_hidden = at::empty({num_tokens, hidden_size}, hidden.options());  // (N, H)
    grad_hidden_buffer = at::empty({max_rows, hidden_size}, acc_options);  // (C, H)
  }
  if (needs_weight_grad) {
    grad_weight_acc = at::zeros({vocab_size, hidden_size}, acc_options);  // (V, H)
  }
  if (needs_bias_grad) {
    grad_bias_acc = at::zeros({vocab_size}, acc_options);  // (V,)
  }
  at::Tensor logits_buffer = at::empty({max_rows * in.block_size}, acc_options);  // (C x block)

  for (int64_t start = 0; start < num_tokens; start += chunk_size) {
    const int64_t rows = std::min(chunk_size, num_tokens - start);
    const at::Tensor hidden_acc = in.hidden.narrow(0, start, rows).to(in.acc_dtype);  // (C, H)
    at::Tensor grad_hidden_acc;
    if (needs_hidden_grad) {
      grad_hidden_acc = grad_hidden_buffer.narrow(0, 0, rows).zero_();  // (C, H)
    }

    for (int64_t vocab_start = 0; vocab_start < vocab_size; vocab_start += in.block_size) {
      const int64_t width = std::min(in.block_size, vocab_size - vocab_start);
      const at::Tensor weight_block =
          in.weight.narrow(0, vocab_start, width).to(in.acc_dtype);  // (block, H)

      // Recompute the block's logits, then turn them into d loss / d logits in place.
      at::Tensor grad_logits = logits_buffer.narrow(0, 0, rows * width).view({rows, width});
      block_logits(grad_logits, hidden_acc, weight_block, in.bias_acc, vocab_start);
      AT_DISPATCH_FLOATING_TYPES(in.acc_dtype, "fused_linear_logprobs_backward_cpu", [&] {
        logits_to_grad<scalar_t>(grad_logits.data_ptr<scalar_t>(), rows, width, vocab_start,
                                 in.targets.data_ptr<int64_t>() + start,
                                 logsumexp_acc.data_ptr<scalar_t>() + start,
                                 grad_acc.data_ptr<scalar_t>() + start);
      });

      if (needs_hidden_grad) {
        grad_hidden_acc.addmm_(grad_logits, weight_block);
      }
      if (needs_weight_grad) {
        grad_weight_acc.narrow(0, vocab_start, width).addmm_(grad_logits.t(), hidden_acc);
      }
      if (needs_bias_grad) {
        grad_bias_acc.narrow(0, vocab_start, width).add_(grad_logits.sum(0));
      }
    }
    if (needs_hidden_grad) {
      grad_hidden.narrow(0, start, rows).copy_(grad_hidden_acc);
    }
  }

  std::optional<at::Tensor> grad_hidden_out;
  std::optional<at::Tensor> grad_weight_out;
  std::optional<at::Tensor> grad_bias_out;
  if (needs_hidden_grad) grad_hidden_out = grad_hidden;
  if (needs_weight_grad) grad_weight_out = grad_weight_acc.to(weight.scalar_type());
  if (needs_bias_grad) grad_bias_out = grad_bias_acc.to(bias->scalar_type());
  return {grad_hidden_out, grad_weight_out, grad_bias_out};
}

}  // namespace pyalign

TORCH_LIBRARY_IMPL(pyalign, CPU, m) {
  m.impl("fused_linear_logprobs", &pyalign::fused_linear_logprobs_cpu);
  m.impl("fused_linear_logprobs_backward", &pyalign::fused_linear_logprobs_backward_cpu);
}
