// Fused CPU kernel of linearized multi-sampling (Jiang et al., ICCV 2019): for every output location, the
// K - 1 auxiliary bilinear samples, the per-channel least-squares sums and the fitted plane's value and slope,
// in one pass, with output-sized results only. Plain C ABI (no torch headers: it builds in a second or two),
// loaded with ctypes by training/sampling/cpu_kernel.py, which documents the layouts.
//
// Conventions (as torch.nn.functional.grid_sample): grid (x, y) in [-1, 1]; align_corners=1: +-1 are the
// border pixel centres, 0: their outer edges. padding 0 zeros, 1 border, 2 reflection. The arithmetic follows
// training/sampling/fit.py (the pure PyTorch path) step for step, so both agree to rounding.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace {

// Tiles of output locations within one image: every per-location step is a loop over the tile that the
// compiler vectorizes (the pixel reads become gathers), and the per-channel sums stay in L1.
constexpr int64_t TILE = 32;

template <typename T>
inline T clamp_to(T v, T low, T high) {
  // NaN -> low (a comparison with NaN is false); compiles to max/min instructions.
  v = v > low ? v : low;
  return v < high ? v : high;
}

// Normalized coordinate -> source pixel coordinate with the padding applied (aten's
// grid_sampler_compute_source_index; PADDING 0 zeros, 1 border, 2 reflection). Branch-free, so that it
// vectorizes; reflection uses x - floor(x / span) span for fmod (the same for x >= 0).
template <typename T, int PADDING, bool ALIGN>
inline T source_index(T coord, int64_t size) {
  const T n = T(size);
  coord = ALIGN ? (coord + T(1)) * T(0.5) * (n - T(1)) : ((coord + T(1)) * n - T(1)) * T(0.5);
  if (PADDING == 2) {
    const T low = ALIGN ? T(0) : T(-0.5);
    const T span = ALIGN ? n - T(1) : n;
    if (span <= T(0)) return T(0);
    T dist = coord - low;
    dist = dist < T(0) ? -dist : dist;
    const T flips = std::floor(dist / span);
    const T extra = dist - flips * span;
    const T odd = flips - T(2) * std::floor(flips * T(0.5));
    coord = odd == T(0) ? extra + low : span - extra + low;
  }
  if (PADDING >= 1) coord = clamp_to(coord, T(0), n - T(1));
  return coord;
}

template <typename T>
struct Problem {
  const T* input;  // (N, C, H_in, W_in) contiguous
  int64_t n, c, h_in, w_in;
  const T* grid;  // (N, H_out, W_out, 2) contiguous
  int64_t hw;     // H_out * W_out
  const T* z;     // (K - 1, 2, N, H_out * W_out) contiguous, standard normal
  int64_t num_aux;
  T sx, sy;  // per-axis spread, normalized units
  T rcond;
  T* value;  // (N, C, H_out * W_out) or null
  T* slope;  // x plane (N, C, H_out * W_out); y plane at slope + slope_stride
  int64_t slope_stride;
};

// Four channels of a pixel as one vector (GCC/Clang vector extensions: movups loads, broadcasts, FMAs).
template <typename T>
struct Vec4;
template <>
struct Vec4<float> {
  typedef float type __attribute__((vector_size(16)));
};
template <>
struct Vec4<double> {
  typedef double type __attribute__((vector_size(32)));
};

template <typename T>
inline typename Vec4<T>::type load4(const T* address) {
  typename Vec4<T>::type v;
  std::memcpy(&v, address, sizeof(v));
  return v;
}

// Per-thread scratch: the current image channels-last (H_in, W_in, C4), C4 = C rounded up to 4 (the padding
// channels are 0), so that the 4 corners of a point are 4 vector loads per 4 channels; the tile's bilinear
// weights and corner offsets for every auxiliary point; and the per-channel sums.
template <typename T>
struct Scratch {
  std::vector<T> image;
  std::vector<T> weight;     // (K - 1, 4, TILE)
  std::vector<int32_t> offset;  // (K - 1, 4, TILE), element offsets into ``image``
  std::vector<T> sums;       // (3, C4, TILE): sum v, sum z_x v, sum z_y v
  int64_t loaded = -1;       // the image in ``image``
};

template <typename T>
void load_channels_last(const Problem<T>& p, int64_t b, int64_t c4, Scratch<T>& s) {
  const int64_t c = p.c, plane = p.h_in * p.w_in;
  const T* image = p.input + b * c * plane;
  T* out = s.image.data();
  for (int64_t ch = 0; ch < c; ++ch) {
    const T* src = image + ch * plane;
    for (int64_t i = 0; i < plane; ++i) out[i * c4 + ch] = src[i];
  }
  s.loaded = b;
}

// One tile: locations q0 .. q0 + len - 1 of image b.
template <typename T, int PADDING, bool ALIGN>
void fit_tile(const Problem<T>& p, int64_t b, int64_t q0, int64_t len, int64_t c4, Scratch<T>& s) {
  typedef typename Vec4<T>::type V;
  const int64_t c = p.c, h = p.h_in, w = p.w_in, locations = p.n * p.hw, aux = p.num_aux;
  const int64_t first = b * p.hw + q0;  // flat location index of the tile's first location
  if (s.loaded != b) load_channels_last(p, b, c4, s);
  alignas(64) T gx[TILE], gy[TILE];
  alignas(64) T s_x[TILE], s_y[TILE], s_xx[TILE], s_yy[TILE], s_xy[TILE];
  for (int64_t l = 0; l < len; ++l) {
    gx[l] = p.grid[2 * (first + l)];
    gy[l] = p.grid[2 * (first + l) + 1];
    s_x[l] = s_y[l] = s_xx[l] = s_yy[l] = s_xy[l] = T(0);
  }
  const T wmax = T(w), hmax = T(h);
  const int32_t w32 = static_cast<int32_t>(w), h32 = static_cast<int32_t>(h), c32 = static_cast<int32_t>(c4);
  // Pass 1, vectorized over the tile: offsets' sums, bilinear weights and corner addresses of every point.
  for (int64_t k = 0; k < aux; ++k) {
    const T* __restrict__ zxk = p.z + (2 * k) * locations + first;
    const T* __restrict__ zyk = p.z + (2 * k + 1) * locations + first;
    T* __restrict__ w00 = s.weight.data() + (4 * k) * TILE;
    T* __restrict__ w01 = w00 + TILE;
    T* __restrict__ w10 = w01 + TILE;
    T* __restrict__ w11 = w10 + TILE;
    int32_t* __restrict__ o00 = s.offset.data() + (4 * k) * TILE;
    int32_t* __restrict__ o01 = o00 + TILE;
    int32_t* __restrict__ o10 = o01 + TILE;
    int32_t* __restrict__ o11 = o10 + TILE;
#pragma GCC ivdep
    for (int64_t l = 0; l < len; ++l) {
      const T ax = zxk[l], ay = zyk[l];
      s_x[l] += ax;
      s_y[l] += ay;
      s_xx[l] += ax * ax;
      s_yy[l] += ay * ay;
      s_xy[l] += ax * ay;
      // Points further than one pixel outside read only zeros: clamped before the integer conversion.
      const T ix = clamp_to(source_index<T, PADDING, ALIGN>(gx[l] + ax * p.sx, w), T(-2), wmax + T(1));
      const T iy = clamp_to(source_index<T, PADDING, ALIGN>(gy[l] + ay * p.sy, h), T(-2), hmax + T(1));
      const T fx = std::floor(ix), fy = std::floor(iy);
      const T tx = ix - fx, ty = iy - fy;
      const int32_t x0 = static_cast<int32_t>(fx), y0 = static_cast<int32_t>(fy);
      const int32_t x1 = x0 + 1, y1 = y0 + 1;
      const T mx0 = (x0 >= 0 && x0 < w32) ? T(1) - tx : T(0);
      const T mx1 = (x1 >= 0 && x1 < w32) ? tx : T(0);
      const T my0 = (y0 >= 0 && y0 < h32) ? T(1) - ty : T(0);
      const T my1 = (y1 >= 0 && y1 < h32) ? ty : T(0);
      // Corners outside get weight 0 and a clamped (valid) address.
      const int32_t cx0 = std::min(std::max(x0, 0), w32 - 1);
      const int32_t cx1 = std::min(std::max(x1, 0), w32 - 1);
      const int32_t cy0 = std::min(std::max(y0, 0), h32 - 1);
      const int32_t cy1 = std::min(std::max(y1, 0), h32 - 1);
      w00[l] = mx0 * my0;
      w01[l] = mx1 * my0;
      w10[l] = mx0 * my1;
      w11[l] = mx1 * my1;
      o00[l] = (cy0 * w32 + cx0) * c32;
      o01[l] = (cy0 * w32 + cx1) * c32;
      o10[l] = (cy1 * w32 + cx0) * c32;
      o11[l] = (cy1 * w32 + cx1) * c32;
    }
  }
  // Pass 2, per location and 4 channels at a time: 4 vector loads per point, the sums in registers.
  const T* image = s.image.data();
  T* sum_v = s.sums.data();
  T* sum_xv = sum_v + c4 * TILE;
  T* sum_yv = sum_xv + c4 * TILE;
  for (int64_t g = 0; g < c4; g += 4) {
    const T* pixels = image + g;
    for (int64_t l = 0; l < len; ++l) {
      V acc_v = {}, acc_x = {}, acc_y = {};
      for (int64_t k = 0; k < aux; ++k) {
        const T* wk = s.weight.data() + (4 * k) * TILE + l;
        const int32_t* ok = s.offset.data() + (4 * k) * TILE + l;
        const V v = wk[0] * load4(pixels + ok[0]) + wk[TILE] * load4(pixels + ok[TILE]) +
                    wk[2 * TILE] * load4(pixels + ok[2 * TILE]) + wk[3 * TILE] * load4(pixels + ok[3 * TILE]);
        acc_v += v;
        acc_x += p.z[(2 * k) * locations + first + l] * v;
        acc_y += p.z[(2 * k + 1) * locations + first + l] * v;
      }
      for (int j = 0; j < 4; ++j) {
        sum_v[(g + j) * TILE + l] = acc_v[j];
        sum_xv[(g + j) * TILE + l] = acc_x[j];
        sum_yv[(g + j) * TILE + l] = acc_y[j];
      }
    }
  }
  // Pass 3: the centred 2x2 solve of fit.py: Z = sum z z^T - n m m^T, h = Z^{-1} (sum z v - m sum v), g = h / s.
  const T count = T(aux);
  const T inv_x = p.sx > T(0) ? T(1) / p.sx : T(0);
  const T inv_y = p.sy > T(0) ? T(1) / p.sy : T(0);
  alignas(64) T ca[TILE], cc[TILE], cbx[TILE], cby[TILE], mxz[TILE], myz[TILE], mxs[TILE], mys[TILE];
  for (int64_t l = 0; l < len; ++l) {
    const T mx = s_x[l] / count, my = s_y[l] / count;
    const T zxx = s_xx[l] - count * mx * mx, zyy = s_yy[l] - count * my * my;
    const T zxy = s_xy[l] - count * mx * my;
    const T det = zxx * zyy - zxy * zxy, trace = zxx + zyy;
    const bool good = det > p.rcond * trace * trace;
    const T inv_det = good ? T(1) / (good ? det : T(1)) : T(0);
    ca[l] = zyy * (inv_det * inv_x);
    cc[l] = zxx * (inv_det * inv_y);
    cbx[l] = zxy * (inv_det * -inv_x);
    cby[l] = zxy * (inv_det * -inv_y);
    mxz[l] = mx;  // mean offset in spread units (for the slopes)
    myz[l] = my;
    mxs[l] = mx * p.sx;  // and in normalized units (for the value)
    mys[l] = my * p.sy;
  }
  for (int64_t ch = 0; ch < c; ++ch) {
    const int64_t out = (b * c + ch) * p.hw + q0;
    T* __restrict__ slope_x = p.slope + out;
    T* __restrict__ slope_y = p.slope + p.slope_stride + out;
    const T* sv = sum_v + ch * TILE;
    const T* sxv = sum_xv + ch * TILE;
    const T* syv = sum_yv + ch * TILE;
    for (int64_t l = 0; l < len; ++l) {
      const T cov_x = sxv[l] - sv[l] * mxz[l], cov_y = syv[l] - sv[l] * myz[l];
      T gxs = cov_x * ca[l] + cov_y * cbx[l];
      T gys = cov_y * cc[l] + cov_x * cby[l];
      gxs = (gxs - gxs) == T(0) ? gxs : T(0);  // NaN and +-Inf -> 0
      gys = (gys - gys) == T(0) ? gys : T(0);
      slope_x[l] = gxs;
      slope_y[l] = gys;
    }
    if (p.value != nullptr) {
      T* __restrict__ value = p.value + out;
      for (int64_t l = 0; l < len; ++l) {
        value[l] = sv[l] / count - slope_x[l] * mxs[l] - slope_y[l] * mys[l];
      }
    }
  }
}

template <typename T, int PADDING, bool ALIGN>
void fit_range(const Problem<T>& p, int64_t begin, int64_t end) {
  // Work items are (image, tile) pairs; begin / end index them.
  const int64_t tiles = (p.hw + TILE - 1) / TILE;
  const int64_t c4 = (p.c + 3) / 4 * 4;
  Scratch<T> s;
  s.image.assign(static_cast<size_t>(p.h_in * p.w_in * c4), T(0));
  s.weight.resize(static_cast<size_t>(4 * p.num_aux * TILE));
  s.offset.resize(static_cast<size_t>(4 * p.num_aux * TILE));
  s.sums.resize(static_cast<size_t>(3 * c4 * TILE));
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / tiles, q0 = (item - b * tiles) * TILE;
    fit_tile<T, PADDING, ALIGN>(p, b, q0, std::min(TILE, p.hw - q0), c4, s);
  }
}

template <typename F>
void parallel(int64_t total, int64_t cost, int threads, F&& body) {
  if (threads <= 1 || total < 2 || cost < 32768) {
    body(int64_t(0), total);
    return;
  }
  threads = static_cast<int>(std::min<int64_t>(threads, total));
  std::vector<std::thread> pool;
  const int64_t step = (total + threads - 1) / threads;
  for (int64_t begin = step; begin < total; begin += step) {
    pool.emplace_back(body, begin, std::min(total, begin + step));
  }
  body(int64_t(0), std::min(total, step));
  for (auto& t : pool) t.join();
}

template <typename T, int PADDING, bool ALIGN>
void fit_all(const Problem<T>& p, int threads) {
  const int64_t items = p.n * ((p.hw + TILE - 1) / TILE);
  parallel(items, p.n * p.hw * p.c * p.num_aux, threads,
           [&p](int64_t begin, int64_t end) { fit_range<T, PADDING, ALIGN>(p, begin, end); });
}

template <typename T>
void fit(const T* input, int64_t n, int64_t c, int64_t h_in, int64_t w_in, const T* grid, int64_t h_out,
         int64_t w_out, const T* z, int64_t num_aux, double sx, double sy, int padding, int align_corners,
         double rcond, T* value, T* slope, int64_t slope_stride, int threads) {
  Problem<T> p{input, n,       c,     h_in,     w_in,  grid,  h_out * w_out, z,
               num_aux, T(sx), T(sy), T(rcond), value, slope, slope_stride};
  const bool align = align_corners != 0;
  if (padding == 0) {
    align ? fit_all<T, 0, true>(p, threads) : fit_all<T, 0, false>(p, threads);
  } else if (padding == 1) {
    align ? fit_all<T, 1, true>(p, threads) : fit_all<T, 1, false>(p, threads);
  } else {
    align ? fit_all<T, 2, true>(p, threads) : fit_all<T, 2, false>(p, threads);
  }
}

// grad_grid[loc] = (sum_c grad_output[b, c, q] * slope_x[b, c, q], same with slope_y), (N, H_out, W_out, 2).
template <typename T>
void grid_grad(const T* grad_output, const T* slope, int64_t slope_stride, int64_t n, int64_t c, int64_t hw,
               T* grad_grid, int threads) {
  parallel(n, n * hw * c, threads, [=](int64_t begin, int64_t end) {
    std::vector<T> acc(2 * static_cast<size_t>(hw));
    for (int64_t b = begin; b < end; ++b) {
      T* ax = acc.data();
      T* ay = ax + hw;
      for (int64_t q = 0; q < hw; ++q) ax[q] = ay[q] = T(0);
      for (int64_t ch = 0; ch < c; ++ch) {
        const int64_t base = (b * c + ch) * hw;
        const T* go = grad_output + base;
        const T* sx = slope + base;
        const T* sy = slope + slope_stride + base;
        for (int64_t q = 0; q < hw; ++q) {
          ax[q] += go[q] * sx[q];
          ay[q] += go[q] * sy[q];
        }
      }
      T* out = grad_grid + 2 * b * hw;
      for (int64_t q = 0; q < hw; ++q) {
        out[2 * q] = ax[q];
        out[2 * q + 1] = ay[q];
      }
    }
  });
}

}  // namespace

extern "C" {

int stn_abi_version() { return 1; }

void stn_linearized_fit_f32(const float* input, int64_t n, int64_t c, int64_t h_in, int64_t w_in,
                            const float* grid, int64_t h_out, int64_t w_out, const float* z, int64_t num_aux,
                            double sx, double sy, int padding, int align_corners, double rcond, float* value,
                            float* slope, int64_t slope_stride, int threads) {
  fit<float>(input, n, c, h_in, w_in, grid, h_out, w_out, z, num_aux, sx, sy, padding, align_corners, rcond,
             value, slope, slope_stride, threads);
}

void stn_linearized_fit_f64(const double* input, int64_t n, int64_t c, int64_t h_in, int64_t w_in,
                            const double* grid, int64_t h_out, int64_t w_out, const double* z, int64_t num_aux,
                            double sx, double sy, int padding, int align_corners, double rcond, double* value,
                            double* slope, int64_t slope_stride, int threads) {
  fit<double>(input, n, c, h_in, w_in, grid, h_out, w_out, z, num_aux, sx, sy, padding, align_corners, rcond,
              value, slope, slope_stride, threads);
}

void stn_grid_grad_f32(const float* grad_output, const float* slope, int64_t slope_stride, int64_t n, int64_t c,
                       int64_t hw, float* grad_grid, int threads) {
  grid_grad<float>(grad_output, slope, slope_stride, n, c, hw, grad_grid, threads);
}

void stn_grid_grad_f64(const double* grad_output, const double* slope, int64_t slope_stride, int64_t n,
                       int64_t c, int64_t hw, double* grad_grid, int threads) {
  grid_grad<double>(grad_output, slope, slope_stride, n, c, hw, grad_grid, threads);
}

}  // extern "C"
