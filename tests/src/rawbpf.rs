//! bpf(2) by hand, for what aya does not do: programs not loaded from an object (an empty
//! program to compare carp's with, or one that counts and decides frames behind it, and
//! one that tags frames), their maps, links and pins, and test runs that report the
//! kernel's own timing.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
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
    load(prog_type, &[mov_imm(0, pass as i32), EXIT], name)
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

/// Loads `insns` as a program of `prog_type` named `name`; panics with the verifier's log
/// when the kernel refuses it.
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
    let mut log = vec![0u8; 1 << 16];
    let r = bpf(
        BPF_PROG_LOAD,
        &Load {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            kern_version: 0,
            prog_flags: 0,
            prog_name,
        },
    );
    let (fd, _) = r.unwrap_or_else(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        panic!(
            "loading {name}: {e}\n{}",
            String::from_utf8_lossy(&log[..end])
        )
    });
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

/// Pins `obj` (a program or map) at `path` on bpffs, for tools that take a pinned object.
pub fn pin(obj: RawFd, path: &std::ffi::CStr) {
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    bpf(
        BPF_OBJ_PIN,
        &ObjPin {
            pathname: path.as_ptr() as u64,
            bpf_fd: obj as u32,
            file_flags: 0,
        },
    )
    .unwrap_or_else(|e| panic!("pinning at {path:?}: {e}"));
}

/// A tc program behind carp that counts the frames it sees and decides them: every frame
/// in slot [`Filter::ALL`] of its map, IPv4 ICMP echo requests also in
/// [`Filter::ECHO_REQUESTS`]; echo requests get the verdict `echo`, other frames `other`
/// (for tcx and for a clsact direct-action filter alike: -1 goes on to what follows, 2
/// drops).
pub struct Filter {
    pub prog: OwnedFd,
    map: OwnedFd,
}

impl Filter {
    pub const ALL: u32 = 0;
    pub const ECHO_REQUESTS: u32 = 1;
    /// On to what follows (tcx's next program, clsact's next filter).
    pub const NEXT: i32 = carp_common::tc::TCX_NEXT;
    /// TCX_DROP / TC_ACT_SHOT.
    pub const DROP: i32 = 2;

    pub fn new(name: &str, echo: i32, other: i32) -> Self {
        let map = array_map(2);
        let mut p = Asm::default();
        // r6 = the context, kept across helper calls.
        p.push(mov_reg(6, 1));
        p.count(map.as_raw_fd(), Self::ALL);
        // r2 = data, r3 = data_end (struct __sk_buff), r4 = data + 35: an Ethernet header,
        // a 20-byte IPv4 header and the ICMP type.
        p.push(ldx(BPF_W, 2, 6, 76));
        p.push(ldx(BPF_W, 3, 6, 80));
        p.push(mov_reg(4, 2));
        p.push(add_imm(4, 35));
        p.jump_to_other(jmp_reg(BPF_JGT, 4, 3));
        // Ethertype 0x0800 as a little-endian load of its big-endian bytes.
        p.push(ldx(BPF_H, 5, 2, 12));
        p.jump_to_other(jmp_imm(BPF_JNE, 5, 0x0008));
        p.push(ldx(BPF_B, 5, 2, 14 + 9));
        p.jump_to_other(jmp_imm(BPF_JNE, 5, 1));
        p.push(ldx(BPF_B, 5, 2, 14 + 20));
        p.jump_to_other(jmp_imm(BPF_JNE, 5, 8));
        p.count(map.as_raw_fd(), Self::ECHO_REQUESTS);
        p.push(mov_imm(0, echo));
        p.push(EXIT);
        p.other_here();
        p.push(mov_imm(0, other));
        p.push(EXIT);
        let prog = load(BPF_PROG_TYPE_SCHED_CLS, &p.insns, name);
        Self { prog, map }
    }

    /// The count in `slot`.
    pub fn count(&self, slot: u32) -> u64 {
        #[repr(C)]
        struct Lookup {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
        }
        let mut value = 0u64;
        bpf(
            BPF_MAP_LOOKUP_ELEM,
            &Lookup {
                map_fd: self.map.as_raw_fd() as u32,
                _pad: 0,
                key: &slot as *const u32 as u64,
                value: &mut value as *mut u64 as u64,
            },
        )
        .expect("BPF_MAP_LOOKUP_ELEM");
        value
    }
}

/// An array of `entries` u64 counters.
fn array_map(entries: u32) -> OwnedFd {
    #[repr(C)]
    struct Create {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    }
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let (fd, _) = bpf(
        BPF_MAP_CREATE,
        &Create {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 8,
            max_entries: entries,
        },
    )
    .expect("BPF_MAP_CREATE");
    // SAFETY: a new file descriptor the kernel just gave us.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// A BPF instruction (struct bpf_insn of linux/bpf.h, opcodes of linux/bpf_common.h) as
/// this little-endian host lays it out: opcode, dst and src registers, 16-bit offset,
/// 32-bit immediate.
const fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    op as u64
        | ((dst | src << 4) as u64) << 8
        | (off as u16 as u64) << 16
        | (imm as u32 as u64) << 32
}

const BPF_W: u8 = 0x00;
const BPF_H: u8 = 0x08;
const BPF_B: u8 = 0x10;
const BPF_JNE: u8 = 0x50;
const BPF_JGT: u8 = 0x20;
const EXIT: u64 = insn(0x95, 0, 0, 0, 0);

const fn mov_imm(dst: u8, imm: i32) -> u64 {
    insn(0xb7, dst, 0, 0, imm)
}

const fn mov_reg(dst: u8, src: u8) -> u64 {
    insn(0xbf, dst, src, 0, 0)
}

const fn add_imm(dst: u8, imm: i32) -> u64 {
    insn(0x07, dst, 0, 0, imm)
}

/// `dst = *(size *)(src + off)` (BPF_LDX | BPF_MEM).
const fn ldx(size: u8, dst: u8, src: u8, off: i16) -> u64 {
    insn(0x61 | size, dst, src, off, 0)
}

/// `if dst <op> imm goto`, the offset patched in by [`Asm`] (BPF_JMP | BPF_K).
const fn jmp_imm(op: u8, dst: u8, imm: i32) -> u64 {
    insn(0x05 | op, dst, 0, 0, imm)
}

/// `if dst <op> src goto` (BPF_JMP | BPF_X).
const fn jmp_reg(op: u8, dst: u8, src: u8) -> u64 {
    insn(0x0d | op, dst, src, 0, 0)
}

/// A program being written, with forward jumps to one label, "other".
#[derive(Default)]
struct Asm {
    insns: Vec<u64>,
    to_other: Vec<usize>,
}

impl Asm {
    fn push(&mut self, insn: u64) {
        self.insns.push(insn);
    }

    fn jump_to_other(&mut self, insn: u64) {
        self.to_other.push(self.insns.len());
        self.push(insn);
    }

    /// Puts the label "other" here: the jumps to it get their offsets.
    fn other_here(&mut self) {
        let here = self.insns.len();
        for &at in &self.to_other {
            let off = (here - at - 1) as u64;
            self.insns[at] |= off << 16;
        }
    }

    /// Adds one to `slot` of the array `map` (clobbers r0-r5).
    fn count(&mut self, map: RawFd, slot: u32) {
        // *(u32 *)(r10 - 4) = slot (BPF_ST | BPF_MEM | BPF_W)
        self.push(insn(0x62, 10, 0, -4, slot as i32));
        // r1 = the map (BPF_LD | BPF_IMM | BPF_DW, BPF_PSEUDO_MAP_FD), two instructions.
        self.push(insn(0x18, 1, 1, 0, map));
        self.push(0);
        self.push(mov_reg(2, 10));
        self.push(add_imm(2, -4));
        // call bpf_map_lookup_elem
        self.push(insn(0x85, 0, 0, 0, 1));
        // if r0 == 0 skip the two that follow
        self.push(insn(0x15, 0, 0, 2, 0));
        self.push(mov_imm(1, 1));
        // lock *(u64 *)(r0 + 0) += r1 (BPF_STX | BPF_ATOMIC | BPF_DW, BPF_ADD)
        self.push(insn(0xdb, 0, 1, 0, 0));
    }
}

/// Attaches a tc `prog` to the egress of `ifindex` through tcx.
pub fn attach_tcx_egress(prog: RawFd, ifindex: u32) -> OwnedFd {
    link(prog, ifindex, BPF_TCX_EGRESS, 0)
}
