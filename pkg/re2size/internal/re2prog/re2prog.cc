//go:build re2

#include <re2/re2.h>

extern "C" int weir_re2_program_size(const char* pattern, int len) {
  RE2 re(re2::StringPiece(pattern, len), RE2::Quiet);
  if (!re.ok()) return -1;
  return re.ProgramSize();
}
