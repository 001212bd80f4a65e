# compress_set_warnings(target): the project's warning flags, applied per target so that
# third-party headers (LibTorch's in particular) stay out of -Werror's reach.
function(compress_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(CCACHE_PROGRAM)
    # ccache can cache translation units that use a precompiled header only with this flag.
    target_compile_options(${target} PRIVATE -fpch-preprocess)
  endif()
endfunction()
