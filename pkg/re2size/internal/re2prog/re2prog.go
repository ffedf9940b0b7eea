//go:build re2

// Package re2prog measures RE2's program size with the real RE2 (Debian's
// libre2-dev), to check re2size.Bound. It is built only with the re2 tag,
// never into Weir's binaries.
package re2prog

/*
#cgo LDFLAGS: -lre2 -lstdc++
#include <stdlib.h>
int weir_re2_program_size(const char* pattern, int len);
*/
import "C"

import "unsafe"

// ProgramSize returns RE2's ProgramSize for pattern with RE2's default
// options, as Envoy compiles it, or -1 if RE2 rejects it.
func ProgramSize(pattern string) int {
	p := C.CString(pattern)
	defer C.free(unsafe.Pointer(p))
	return int(C.weir_re2_program_size(p, C.int(len(pattern))))
}
