//! bpf(2) by hand, for what aya does not do: programs not loaded from an object (an empty
//! program to compare carp's with, or to share a hook with it, and one that tags frames),
//! their links, and test runs that report the kernel's own timing.

use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// bpf(2) with an attribute union of 128 zeroed bytes whose head is `head`: the result
/// and the union as the kernel left it.
fn bpf<T>(cmd: libc::c_long, head: &T) -> std::io::Result<(libc::c_long, [u8; 128])> {
    let mut attr = [0u8; 128];
    // SAFETY: T is a #[repr(C)] struct of plain integers no longer than the buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (head as *const T).cast::<u8>(),
            attr.as_mut_ptr(),
            size_of::<T>(),
        )
    };
    // SAFETY: the kernel reads (and for test runs writes) `attr`, which lives long enough.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((r, attr))
}

/// A program of `prog_type` named `name` (at most 15 bytes) that passes everything:
/// `r0 = pass; exit` (XDP_PASS is 2, TC_ACT_OK 0).
pub fn empty_program(prog_type: u32, pass: u64, name: &str) -> OwnedFd {
    // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm `pass`; BPF_JMP | BPF_EXIT
    load(prog_type, &[0xb7 | (pass << 32), 0x95], name)
}

/// A tc program that tags every frame with 802.1Q VLAN `vid` and passes it:
/// `bpf_skb_vlan_push(skb, htons(ETH_P_8021Q), vid)`, which puts the tag in the skb's
/// metadata (`skb->vlan_tci`), where a device with tx VLAN offload leaves it (veth hands
/// the skb to its peer so: the tag a NIC with rx VLAN offload took out of the frame).
pub fn vlan_push_program(vid: u16) -> OwnedFd {
    /// BPF_FUNC_skb_vlan_push (linux/bpf.h).
    const SKB_VLAN_PUSH: u64 = 18;
    let insns = [
        // r2 = htons(0x8100) (BPF_ALU64 | BPF_MOV | BPF_K, dst r2)
        0xb7 | (2 << 8) | (0x0081 << 32),
        // r3 = vid
        0xb7 | (3 << 8) | (u64::from(vid) << 32),
        // call bpf_skb_vlan_push (r1 is still the skb)
        0x85 | (SKB_VLAN_PUSH << 32),
        // r0 = TC_ACT_OK; exit
        0xb7,
        0x95,
    ];
    load(BPF_PROG_TYPE_SCHED_CLS, &insns, "carpt_vlan_push")
}

/// Loads `insns` (64-bit instructions) as a program of `prog_type` named `name`.
fn load(prog_type: u32, insns: &[u64], name: &str) -> OwnedFd {
    #[repr(C)]
    struct Load {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
    }
    let mut prog_name = [0u8; 16];
    prog_name[..name.len()].copy_from_slice(name.as_bytes());
    let license = c"GPL";
    let (fd, _) = bpf(
        BPF_PROG_LOAD,
        &Load {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name,
        },
    )
    .expect("loading a program");
    // SAFETY: a new file descriptor the kernel just gave us.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// The kernel's mean ns per run of `prog` over `frame`, `repeat` times.
pub fn test_run(prog: RawFd, frame: &[u8], repeat: u32) -> u64 {
    #[repr(C)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
    }
    let (_, attr) = bpf(
        BPF_PROG_TEST_RUN,
        &TestRun {
            prog_fd: prog as u32,
            retval: 0,
            data_size_in: frame.len() as u32,
            data_size_out: 0,
            data_in: frame.as_ptr() as u64,
            data_out: 0,
            repeat,
        },
    )
    .expect("BPF_PROG_TEST_RUN");
    // The kernel's mean duration in ns is the u32 at byte 36.
    u64::from(u32::from_ne_bytes(attr[36..40].try_into().unwrap()))
}

/// Attaches `prog` to `ifindex` of the calling thread's namespace through a bpf_link of
/// `attach_type` with `flags` (gone with the fd).
fn link(prog: RawFd, ifindex: u32, attach_type: u32, flags: u32) -> OwnedFd {
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
    }
    let (fd, _) = bpf(
        BPF_LINK_CREATE,
        &LinkCreate {
            prog_fd: prog as u32,
            target_ifindex: ifindex,
            attach_type,
            flags,
        },
    )
    .expect("BPF_LINK_CREATE");
    // SAFETY: a new file descriptor the kernel just gave us.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// Attaches an XDP `prog` to `ifindex` in native mode.
pub fn attach_native(prog: RawFd, ifindex: u32) -> OwnedFd {
    link(prog, ifindex, BPF_XDP, XDP_FLAGS_DRV_MODE)
}

/// Attaches a tc `prog` to the ingress of `ifindex` through tcx, after the programs there.
pub fn attach_tcx_ingress(prog: RawFd, ifindex: u32) -> OwnedFd {
    link(prog, ifindex, BPF_TCX_INGRESS, 0)
}

/// Attaches a tc `prog` to the egress of `ifindex` through tcx.
pub fn attach_tcx_egress(prog: RawFd, ifindex: u32) -> OwnedFd {
    link(prog, ifindex, BPF_TCX_EGRESS, 0)
}
