// llama.cpp's metadata dump, bounded (see metadata_dump.rs for why).
//
// The link wraps llama.cpp's `gguf_kv_to_str` (`-Wl,--wrap`, build.rs): every
// call llama.cpp makes to it lands in `__wrap_...` below. A scalar or string
// value goes to the real function. An array is rendered exactly as the real
// function renders it, but only as far as its callers use: they print the
// first 40 characters (37 and "...") and keep no array's text. The real
// function renders all of it: 262,144 token strings and 262,144 scores for
// Gemma 3, a sixth of the model's load.
//
// The gguf functions are declared here rather than taken from llama.cpp's
// headers, which the build does not expose to this crate; their signatures
// and the type ids are the GGUF format's, stable across llama.cpp versions.

#include <cstdint>
#include <cstdio>
#include <string>

// `extern "C"` below only fixes the two symbols' names to the ones the
// link's `--wrap` uses; callers and callee are both C++, so returning a
// std::string is the C++ ABI on both sides.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wreturn-type-c-linkage"
#endif

extern "C" {
struct gguf_context;
struct ggml_context;
struct gguf_init_params {
    bool no_alloc;
    struct ggml_context ** ctx;
};
struct gguf_context * gguf_init_from_file(const char * fname, struct gguf_init_params params);
void gguf_free(struct gguf_context * ctx);
int64_t gguf_get_n_kv(const struct gguf_context * ctx);
int gguf_get_kv_type(const struct gguf_context * ctx, int64_t key_id);
int gguf_get_arr_type(const struct gguf_context * ctx, int64_t key_id);
size_t gguf_get_arr_n(const struct gguf_context * ctx, int64_t key_id);
const void * gguf_get_arr_data(const struct gguf_context * ctx, int64_t key_id);
const char * gguf_get_arr_str(const struct gguf_context * ctx, int64_t key_id, size_t i);

// llama.cpp's `std::string gguf_kv_to_str(const gguf_context *, int)`, by its
// mangled name: `__real_` is the original, `__wrap_` what its callers get.
std::string __real__Z14gguf_kv_to_strB5cxx11PK12gguf_contexti(const gguf_context * ctx, int i);
std::string __wrap__Z14gguf_kv_to_strB5cxx11PK12gguf_contexti(const gguf_context * ctx, int i);
int llama_router_metadata_dump_check(const char * path, size_t * longest);
}

// The function by its own name, as llama.cpp's callers reach it: after the
// link's wrap, that is the `__wrap_` version.
std::string gguf_kv_to_str(const gguf_context * ctx, int i);

namespace {

enum : int {
    TYPE_UINT8 = 0,
    TYPE_INT8 = 1,
    TYPE_UINT16 = 2,
    TYPE_INT16 = 3,
    TYPE_UINT32 = 4,
    TYPE_INT32 = 5,
    TYPE_FLOAT32 = 6,
    TYPE_BOOL = 7,
    TYPE_STRING = 8,
    TYPE_ARRAY = 9,
    TYPE_UINT64 = 10,
    TYPE_INT64 = 11,
    TYPE_FLOAT64 = 12,
};

// The callers print at most this many characters of a value.
constexpr size_t SHOWN = 40;
// Rendered past this, an array's text is longer than anything shown: the
// callers cut it to SHOWN - 3 and add "...", as they do the whole text.
constexpr size_t ENOUGH = 2 * SHOWN;

// One element, as llama.cpp's gguf_data_to_str writes it.
std::string element(int type, const void * data, size_t i) {
    switch (type) {
        case TYPE_UINT8: return std::to_string(static_cast<const uint8_t *>(data)[i]);
        case TYPE_INT8: return std::to_string(static_cast<const int8_t *>(data)[i]);
        case TYPE_UINT16: return std::to_string(static_cast<const uint16_t *>(data)[i]);
        case TYPE_INT16: return std::to_string(static_cast<const int16_t *>(data)[i]);
        case TYPE_UINT32: return std::to_string(static_cast<const uint32_t *>(data)[i]);
        case TYPE_INT32: return std::to_string(static_cast<const int32_t *>(data)[i]);
        case TYPE_UINT64: return std::to_string(static_cast<const uint64_t *>(data)[i]);
        case TYPE_INT64: return std::to_string(static_cast<const int64_t *>(data)[i]);
        case TYPE_FLOAT32: return std::to_string(static_cast<const float *>(data)[i]);
        case TYPE_FLOAT64: return std::to_string(static_cast<const double *>(data)[i]);
        case TYPE_BOOL: return static_cast<const int8_t *>(data)[i] != 0 ? "true" : "false";
        default: return "unknown type " + std::to_string(type);
    }
}

// What a caller prints of a value's text.
std::string shown(const std::string & text) {
    return text.size() > SHOWN ? text.substr(0, SHOWN - 3) + "..." : text;
}

}  // namespace

std::string __wrap__Z14gguf_kv_to_strB5cxx11PK12gguf_contexti(const gguf_context * ctx, int i) {
    if (gguf_get_kv_type(ctx, i) != TYPE_ARRAY) {
        return __real__Z14gguf_kv_to_strB5cxx11PK12gguf_contexti(ctx, i);
    }
    const int type = gguf_get_arr_type(ctx, i);
    const size_t n = gguf_get_arr_n(ctx, i);
    const void * data = type == TYPE_STRING ? nullptr : gguf_get_arr_data(ctx, i);
    std::string text = "[";
    for (size_t j = 0; j < n; j++) {
        if (text.size() > ENOUGH) {
            return text;
        }
        if (type == TYPE_STRING) {
            text += '"';
            for (const char * c = gguf_get_arr_str(ctx, i, j); *c != '\0'; c++) {
                // The real function escapes backslashes and quotes.
                if (*c == '\\' || *c == '"') {
                    text += '\\';
                }
                text += *c;
            }
            text += '"';
        } else if (type == TYPE_ARRAY) {
            text += "???";
        } else {
            text += element(type, data, j);
        }
        if (j + 1 < n) {
            text += ", ";
        }
    }
    text += "]";
    return text;
}

// For the tests: whether every value of the GGUF file at `path` is shown the
// same through the link as by the real function (0: all the same; n > 0: n
// differ; -1: the file did not open). `longest` gets the longest text the
// link's version gave: an unwrapped link gives a whole array's.
int llama_router_metadata_dump_check(const char * path, size_t * longest) {
    gguf_init_params params = {true, nullptr};
    gguf_context * ctx = gguf_init_from_file(path, params);
    if (ctx == nullptr) {
        return -1;
    }
    int differ = 0;
    *longest = 0;
    for (int64_t i = 0; i < gguf_get_n_kv(ctx); i++) {
        const std::string wrapped = gguf_kv_to_str(ctx, static_cast<int>(i));
        const std::string real = __real__Z14gguf_kv_to_strB5cxx11PK12gguf_contexti(ctx, static_cast<int>(i));
        if (shown(wrapped) != shown(real)) {
            std::fprintf(stderr, "metadata_dump: key %lld: shown %s, llama.cpp shows %s\n",
                         static_cast<long long>(i), shown(wrapped).c_str(), shown(real).c_str());
            differ++;
        }
        *longest = wrapped.size() > *longest ? wrapped.size() : *longest;
    }
    gguf_free(ctx);
    return differ;
}
