# llama-router's patch to the llama.cpp that llama-cpp-sys-2 vendors: a faster
# vocabulary load (llama-vocab.cpp), the largest part of a model swap.
#
# llama_vocab::impl::load scans its whole 262k-entry token map four times to
# find special tokens by their text: each scan visits every hash-map node, reads
# the token's attributes at a random place in a 10 MB array and compares the
# text with dozens of literals. On the demo model, on 2 cores, a swap took
# 513 ms without this patch and 320 ms with it (scripts/swap-ab.py). The patch
# keeps every scan's body as it is and feeds it only the entries it can act
# on (those with one of the texts it compares with, or the attribute it
# tests), found by lookups and one sequential pass. Where a scan
# takes the first match, several candidates keep the map's own order, so every
# id and attribute comes out as before; only the order of some log lines moves.
#
# How it is applied: .cargo/config.toml sets CMAKE_PROJECT_INCLUDE to this file,
# which llama-cpp-sys-2's build script passes to CMake, so this runs inside
# llama.cpp's own configure. It writes a patched copy of llama-vocab.cpp into
# the build tree and builds the `llama` library from it; the cargo registry is
# untouched. The source's SHA-256 is pinned: a new llama.cpp stops the build
# here until someone reviews the patch against it. When this file changes, bump
# GGML_LLAMA_ROUTER_PATCH in .cargo/config.toml, which makes cargo rerun
# llama.cpp's build. (The build script configures a build tree only once: one
# configured before CMAKE_PROJECT_INCLUDE was set stays unpatched until
# `cargo clean -p llama-cpp-sys-2`.)
if(NOT PROJECT_NAME STREQUAL "llama.cpp")
    return() # ggml's own project() call, or a project that is not llama.cpp
endif()
# A version check, not cmake_minimum_required(), which would reset llama.cpp's
# own policy settings: file(COPY_FILE ... ONLY_IF_DIFFERENT) needs 3.21.
if(CMAKE_VERSION VERSION_LESS 3.21)
    message(FATAL_ERROR "llama-router patch: CMake 3.21 or newer is needed, this is ${CMAKE_VERSION}")
endif()

set(LLAMA_ROUTER_VOCAB_SHA256 18f624c7f5a64f6bd4458248d2cde0ba989cbd46c47b8007be1765e31486c938)

# Replaces the one occurrence of `old` in the variable named by `var`.
function(llama_router_replace var old new)
    string(FIND "${${var}}" "${old}" at)
    if(at EQUAL -1)
        message(FATAL_ERROR "llama-router patch: text not found in llama-vocab.cpp:\n${old}")
    endif()
    string(REPLACE "${old}" "${new}" replaced "${${var}}")
    string(LENGTH "${${var}}" before)
    string(LENGTH "${replaced}" after)
    string(LENGTH "${old}" old_len)
    string(LENGTH "${new}" new_len)
    math(EXPR expected "${before} - ${old_len} + ${new_len}")
    if(NOT after EQUAL expected)
        message(FATAL_ERROR "llama-router patch: text found more than once in llama-vocab.cpp:\n${old}")
    endif()
    set(${var} "${replaced}" PARENT_SCOPE)
endfunction()

# The literals a scan compares `t.first` with, as a C++ initializer list: the
# scan starts at `head` and ends at `tail`. The scan may use `t.first` in no
# other way than those comparisons and in log messages.
function(llama_router_literals out text head tail)
    string(FIND "${text}" "${head}" begin)
    string(SUBSTRING "${text}" ${begin} -1 rest)
    string(FIND "${rest}" "${tail}" end)
    if(begin EQUAL -1 OR end EQUAL -1)
        message(FATAL_ERROR "llama-router patch: scan not found in llama-vocab.cpp:\n${head}")
    endif()
    string(SUBSTRING "${rest}" 0 ${end} body)
    set(literals "")
    set(scan "${body}")
    while(TRUE)
        string(REGEX MATCH "t\\.first == (\"[^\"]*\")" match "${scan}")
        if(match STREQUAL "")
            break()
        endif()
        if(literals STREQUAL "")
            set(literals "${CMAKE_MATCH_1}")
        else()
            string(APPEND literals ", ${CMAKE_MATCH_1}")
        endif()
        string(FIND "${scan}" "${match}" at)
        string(LENGTH "${match}" len)
        math(EXPR at "${at} + ${len}")
        string(SUBSTRING "${scan}" ${at} -1 scan)
    endwhile()
    string(REGEX REPLACE "t\\.first == \"[^\"]*\"" "" other "${body}")
    string(REPLACE "t.first.c_str()" "" other "${other}")
    string(FIND "${other}" "t.first" stray)
    if(NOT stray EQUAL -1 OR literals STREQUAL "")
        message(FATAL_ERROR "llama-router patch: a scan in llama-vocab.cpp uses token texts in a way the patch does not know:\n${head}")
    endif()
    set(${out} "${literals}" PARENT_SCOPE)
endfunction()

# Makes the scan that starts at `head` visit llama_router_scan_subset(...,
# `subset_args`) instead of the whole token_to_id.
function(llama_router_narrow_scan var head subset_args)
    string(REPLACE "for (const auto & t : token_to_id)"
        "for (const auto & t : llama_router_scan_subset(token_to_id, id_to_token, ${subset_args}))"
        narrowed "${head}")
    llama_router_replace(${var} "${head}" "${narrowed}")
    set(${var} "${${var}}" PARENT_SCOPE)
endfunction()

function(llama_router_patch_vocab)
    set(source "${CMAKE_SOURCE_DIR}/src/llama-vocab.cpp")
    file(SHA256 "${source}" sum)
    if(NOT sum STREQUAL LLAMA_ROUTER_VOCAB_SHA256)
        message(FATAL_ERROR "llama-router patch: ${source} (sha256 ${sum}) is not the file "
            "cmake/llama-patch.cmake was written for: review the patch against this llama.cpp, "
            "then update LLAMA_ROUTER_VOCAB_SHA256")
    endif()
    file(READ "${source}" text)

    set(scan_eot [==[        for (const auto & t : token_to_id) {
            auto & attr = id_to_token[t.second].attr;

            // find EOT token]==])
    set(scan_unused [==[            for (const auto & t : token_to_id) {
                auto & attr = id_to_token[t.second].attr;

                if ((attr & LLAMA_TOKEN_ATTR_CONTROL) == 0) {]==])
    set(scan_eog [==[        for (const auto & t : token_to_id) {
            auto & attr = id_to_token[t.second].attr;

            if (false
]==])
    set(scan_render [==[        for (const auto & t : token_to_id) {
            auto & attr = id_to_token[t.second].attr;

            if (t.first == "<|channel|>"]==])
    llama_router_literals(eot_texts "${text}" "${scan_eot}" "// auto-detect unused tokens")
    llama_router_literals(eog_texts "${text}" "${scan_eog}" "// @ngxson : quick hack")
    llama_router_literals(render_texts "${text}" "${scan_render}" "// sanity checks")

    llama_router_narrow_scan(text "${scan_eot}" "{${eot_texts}}, 0, true")
    llama_router_narrow_scan(text "${scan_unused}" "{}, LLAMA_TOKEN_ATTR_CONTROL, false")
    llama_router_narrow_scan(text "${scan_eog}" "{${eog_texts}}, LLAMA_TOKEN_ATTR_CONTROL, false")
    llama_router_narrow_scan(text "${scan_render}" "{${render_texts}}, 0, false")
    string(FIND "${text}" ": token_to_id)" left)
    if(NOT left EQUAL -1)
        message(FATAL_ERROR "llama-router patch: a scan over token_to_id is left in llama-vocab.cpp")
    endif()

    # No token_to_id.reserve(): sizing the map up front would change its
    # iteration order, and with it which of several candidates a scan meets first.

    file(READ "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/llama-vocab-scan-subset.cpp.in" helper)
    set(load_head "void llama_vocab::impl::load(llama_model_loader & ml, const LLM_KV & kv) {")
    llama_router_replace(text "${load_head}" "${helper}\n${load_head}")

    set(dir "${CMAKE_BINARY_DIR}/llama-router-patch")
    set(patched "${dir}/llama-vocab.cpp")
    file(WRITE "${patched}.new" "${text}")
    # Only a changed file is rewritten, so a reconfigure does not rebuild llama.
    file(COPY_FILE "${patched}.new" "${patched}" ONLY_IF_DIFFERENT)

    get_target_property(sources llama SOURCES)
    list(FIND sources "llama-vocab.cpp" at)
    if(at EQUAL -1)
        message(FATAL_ERROR "llama-router patch: llama-vocab.cpp is not among the llama target's sources")
    endif()
    list(REMOVE_AT sources ${at})
    list(INSERT sources ${at} "${patched}")
    set_property(TARGET llama PROPERTY SOURCES "${sources}")
    # Like the file it replaces: compiled alone, outside llama's unity batches.
    set_source_files_properties("${patched}" TARGET_DIRECTORY llama
        PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
    message(STATUS "llama-router patch: llama builds from ${patched}")
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL llama_router_patch_vocab)
