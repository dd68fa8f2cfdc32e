//! tc verdicts carp's tc program returns that userspace reads too (the tests).

/// `TCX_NEXT` (include/uapi/linux/bpf.h), the same value as `TC_ACT_UNSPEC`
/// (linux/pkt_cls.h): the frame goes on to the next tcx program, then to the classic
/// clsact filters, then to the stack (net/core/dev.c, `tcx_run` and `sch_handle_ingress`).
/// Any other verdict, `TCX_PASS` (`TC_ACT_OK`) included, ends the run there.
pub const TCX_NEXT: i32 = -1;
