//! The infra ("pause") image that km carries inside its own binary.
//!
//! Every pod gets an infra container that holds the pod's network
//! namespace while its application containers come and go. There is no
//! registry on km's machines, so km builds the image itself: a root file
//! system with a single file, `/pause`, imported into Docker by
//! [`Runtime::ensure_pause_image`](super::runtime::Runtime::ensure_pause_image).
//!
//! `/pause` is a static ELF executable of about 200 bytes, assembled here
//! byte by byte. It installs a handler for SIGTERM and SIGINT that calls
//! `exit_group(0)`, then sleeps in a loop. The handler is needed because
//! the kernel drops signals whose action is the default when they are sent
//! to the init process of a PID namespace, and the infra container's
//! process is PID 1 of its namespace: without a handler `docker stop` would
//! wait out the whole grace period and then SIGKILL it.
//!
//! Layout of the file (one read+execute `PT_LOAD` segment mapped at
//! [`BASE`], the file mapped whole):
//!
//! ```text
//! 0    ELF header (64 bytes)
//! 64   program header (56 bytes)
//! 120  handler: exit_group(0)                      (code offset 0)
//! 136  struct sigaction for rt_sigaction, 32 bytes (code offset 16)
//! 168  entry point: install handler, sleep forever (code offset 48)
//! ```
//!
//! The handler and the sigaction come first so that the entry code only
//! refers backwards and nothing needs patching.

use sha2::{Digest, Sha256};

/// Errors building the pause image.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// km has no built-in pause program for this CPU architecture.
    #[error(
        "km has no built-in pause program for the {arch} architecture (only x86_64 and aarch64): \
         pass --pause-image naming an infra image that is present on this node"
    )]
    UnsupportedArch {
        /// The architecture km was built for.
        arch: String,
    },
    /// Writing the tar archive failed.
    #[error("cannot build the pause image's root file system: {0}")]
    Tar(#[source] std::io::Error),
}

/// The repository of the built-in pause image.
const REPOSITORY: &str = "km/pause";

/// Virtual address the executable is mapped at (the usual base for static
/// executables; above any `vm.mmap_min_addr`).
const BASE: u64 = 0x40_0000;
/// ELF header plus one program header: where the code starts in the file.
const HEADERS_LEN: usize = 64 + 56;
/// Code offset of the `struct sigaction` handed to rt_sigaction.
const ACT_OFFSET: usize = 16;
/// Code offset of the entry point.
const ENTRY_OFFSET: usize = 48;
/// `SA_RESTORER`: the sigaction carries its own return trampoline.
const SA_RESTORER: u64 = 0x0400_0000;
/// Signal numbers (the same on x86_64 and aarch64).
const SIGINT: u8 = 2;
const SIGTERM: u8 = 15;

/// The reference of the built-in pause image: `km/pause:<km version>-<hash>`,
/// where the hash is taken over the program, so a changed program gets a
/// new image instead of reusing a stale one imported by an older km.
pub fn pause_image() -> String {
    let version: String = env!("CARGO_PKG_VERSION")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    match program_for(std::env::consts::ARCH) {
        Some(bytes) => {
            let digest = Sha256::digest(&bytes);
            let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
            format!("{REPOSITORY}:{version}-{hash}")
        }
        None => format!("{REPOSITORY}:{version}"),
    }
}

/// A tar archive of the pause image's root file system: `/pause`, mode
/// 0755, owned by root. Import it with `ENTRYPOINT ["/pause"]`.
pub fn rootfs_tar() -> Result<Vec<u8>, PauseError> {
    let arch = std::env::consts::ARCH;
    let program = program_for(arch).ok_or_else(|| PauseError::UnsupportedArch {
        arch: arch.to_string(),
    })?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(program.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, "pause", program.as_slice())
        .map_err(PauseError::Tar)?;
    builder.into_inner().map_err(PauseError::Tar)
}

/// The pause executable for `arch` (a `std::env::consts::ARCH` value), or
/// None when km has none for it.
fn program_for(arch: &str) -> Option<Vec<u8>> {
    let (machine, code) = match arch {
        "x86_64" => (EM_X86_64, x86_64_code()),
        "aarch64" => (EM_AARCH64, aarch64_code()),
        _ => return None,
    };
    Some(elf(machine, &code))
}

/// `e_machine` values.
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// Wraps `code` into a static ELF64 little-endian executable with one
/// loadable segment covering the whole file.
fn elf(machine: u16, code: &[u8]) -> Vec<u8> {
    let total = (HEADERS_LEN + code.len()) as u64;
    let entry = BASE + (HEADERS_LEN + ENTRY_OFFSET) as u64;
    let mut f = Vec::with_capacity(total as usize);
    // ELF header.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F']); // magic
    f.push(2); // EI_CLASS: 64-bit
    f.push(1); // EI_DATA: little-endian
    f.push(1); // EI_VERSION: current
    f.push(0); // EI_OSABI: System V
    f.extend_from_slice(&[0; 8]); // EI_ABIVERSION and padding, to 16 bytes
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    f.extend_from_slice(&machine.to_le_bytes()); // e_machine
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&entry.to_le_bytes()); // e_entry
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff: right after this header
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no section headers
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shentsize
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    // Program header: map the whole file read+execute at BASE.
    f.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // p_flags: PF_R | PF_X
    f.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    f.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    f.extend_from_slice(&total.to_le_bytes()); // p_filesz
    f.extend_from_slice(&total.to_le_bytes()); // p_memsz
    f.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align: page
    f.extend_from_slice(code);
    f
}

/// Virtual address of a code offset.
fn addr(code_offset: usize) -> u64 {
    BASE + (HEADERS_LEN + code_offset) as u64
}

/// The kernel's `struct sigaction` (the same layout on x86_64 and
/// aarch64): handler, flags, restorer, mask; 8 bytes each.
fn sigaction(handler: u64, flags: u64, restorer: u64) -> [u8; 32] {
    let mut act = [0u8; 32];
    act[0..8].copy_from_slice(&handler.to_le_bytes());
    act[8..16].copy_from_slice(&flags.to_le_bytes());
    act[16..24].copy_from_slice(&restorer.to_le_bytes());
    // act[24..32]: sa_mask, empty: nothing extra is blocked in the handler.
    act
}

/// x86_64 machine code. Syscall number in eax, arguments in rdi, rsi,
/// rdx, r10; `syscall` clobbers rax, rcx and r11 only.
fn x86_64_code() -> Vec<u8> {
    let mut c = Vec::new();
    // Handler (offset 0), entered on SIGTERM or SIGINT; never returns.
    c.extend_from_slice(&[0xb8, 0xe7, 0x00, 0x00, 0x00]); // mov eax, 231 (exit_group)
    c.extend_from_slice(&[0x31, 0xff]); // xor edi, edi: status 0
    c.extend_from_slice(&[0x0f, 0x05]); // syscall: the process ends here
    c.resize(ACT_OFFSET, 0xcc); // pad with int3 up to the sigaction
    // The sigaction. On x86_64 the kernel refuses to deliver a signal to a
    // handler without SA_RESTORER (it would have no return address to push),
    // so we name one; it is never used because the handler never returns.
    let handler = addr(0);
    c.extend_from_slice(&sigaction(handler, SA_RESTORER, handler));
    debug_assert_eq!(c.len(), ENTRY_OFFSET);
    // Entry point: rt_sigaction(sig, &act, NULL, 8) for each signal.
    let act = addr(ACT_OFFSET) as u32; // BASE is far below 4 GiB
    for sig in [SIGTERM, SIGINT] {
        c.extend_from_slice(&[0xb8, 0x0d, 0x00, 0x00, 0x00]); // mov eax, 13 (rt_sigaction)
        c.extend_from_slice(&[0xbf, sig, 0x00, 0x00, 0x00]); // mov edi, sig
        c.push(0xbe); // mov esi, imm32: address of the sigaction (zero-extended into rsi)
        c.extend_from_slice(&act.to_le_bytes());
        c.extend_from_slice(&[0x31, 0xd2]); // xor edx, edx: no old action wanted
        c.extend_from_slice(&[0x41, 0xba, 0x08, 0x00, 0x00, 0x00]); // mov r10d, 8: sigset size
        c.extend_from_slice(&[0x0f, 0x05]); // syscall
    }
    // Loop: pause() until a signal arrives; the handler ends the process,
    // any other wake-up just pauses again.
    c.extend_from_slice(&[0xb8, 0x22, 0x00, 0x00, 0x00]); // mov eax, 34 (pause)
    c.extend_from_slice(&[0x0f, 0x05]); // syscall
    c.extend_from_slice(&[0xeb, 0xf7]); // jmp -9: back to the mov eax, 34
    c
}

/// aarch64 machine code (little-endian 32-bit words). Syscall number in
/// x8, arguments in x0..x5, `svc #0`; the kernel changes only x0.
fn aarch64_code() -> Vec<u8> {
    /// `movz xd, #imm16`: xd = imm16.
    fn movz(rd: u32, imm16: u32) -> u32 {
        0xd280_0000 | (imm16 << 5) | rd
    }
    /// `adr xd, pc + offset`, offset within ±1 MiB.
    fn adr(rd: u32, offset: i32) -> u32 {
        let imm = (offset as u32) & 0x1f_ffff; // 21-bit two's complement
        0x1000_0000 | ((imm & 3) << 29) | ((imm >> 2) << 5) | rd
    }
    /// `b pc + offset`, offset a multiple of 4.
    fn b(offset: i32) -> u32 {
        0x1400_0000 | (((offset >> 2) as u32) & 0x03ff_ffff)
    }
    /// `svc #0`: enter the kernel.
    const SVC: u32 = 0xd400_0001;
    // Handler (offset 0), entered on SIGTERM or SIGINT; never returns.
    let handler = [
        movz(0, 0),  // x0 = 0: exit status
        movz(8, 94), // x8 = 94 (exit_group)
        SVC,         // the process ends here
        0,           // padding (udf #0) up to the sigaction
    ];
    let mut c: Vec<u8> = handler.into_iter().flat_map(u32::to_le_bytes).collect();
    debug_assert_eq!(c.len(), ACT_OFFSET);
    // The sigaction: no SA_RESTORER needed, the kernel returns through the
    // vDSO, and the handler never returns anyway.
    c.extend_from_slice(&sigaction(addr(0), 0, 0));
    debug_assert_eq!(c.len(), ENTRY_OFFSET);
    // Entry point: rt_sigaction(sig, &act, NULL, 8) for each signal.
    let mut w: Vec<u32> = Vec::new();
    for sig in [SIGTERM, SIGINT] {
        let pc = (c.len() + 4 * w.len()) as i32; // offset of the adr below
        w.push(movz(0, u32::from(sig))); // x0 = signal number
        w.push(adr(1, ACT_OFFSET as i32 - (pc + 4))); // x1 = &act (backwards)
        w.push(movz(2, 0)); // x2 = NULL: no old action wanted
        w.push(movz(3, 8)); // x3 = 8: sigset size
        w.push(movz(8, 134)); // x8 = 134 (rt_sigaction)
        w.push(SVC);
    }
    // Loop: ppoll(NULL, 0, NULL, NULL, 0) sleeps until a signal arrives
    // (aarch64 has no pause syscall); the handler ends the process, any
    // other wake-up just sleeps again.
    let top = w.len();
    for reg in 0..5 {
        w.push(movz(reg, 0)); // x0..x4 = 0: no fds, no timeout, no mask
    }
    w.push(movz(8, 73)); // x8 = 73 (ppoll)
    w.push(SVC);
    let here = w.len();
    w.push(b(-4 * (here - top) as i32)); // back to the top of the loop
    c.extend(w.into_iter().flat_map(u32::to_le_bytes));
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::runtime::Runtime;
    use bollard::models::ContainerCreateBody;
    use std::time::{Duration, Instant};

    fn u64_at(b: &[u8], at: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(a)
    }

    #[test]
    fn elf_headers_describe_the_program() {
        for (arch, machine) in [("x86_64", EM_X86_64), ("aarch64", EM_AARCH64)] {
            let p = program_for(arch).expect("supported arch");
            assert_eq!(&p[..4], b"\x7fELF");
            assert_eq!(u16::from_le_bytes([p[18], p[19]]), machine);
            let entry = u64_at(&p, 24);
            assert_eq!(entry, addr(ENTRY_OFFSET));
            assert!(entry < BASE + p.len() as u64, "entry inside the segment");
            assert_eq!(u64_at(&p, 64 + 32), p.len() as u64, "p_filesz is the file");
            // The sigaction names the handler at the start of the code.
            assert_eq!(u64_at(&p, HEADERS_LEN + ACT_OFFSET), addr(0));
            assert!(p.len() < 256, "{arch}: {} bytes", p.len());
        }
        assert!(program_for("riscv64").is_none());
    }

    #[test]
    fn aarch64_encodings() {
        let c = aarch64_code();
        let word = |i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
        assert_eq!(word(0), 0xd280_0000); // mov x0, #0
        assert_eq!(word(4), 0xd280_0bc8); // mov x8, #94
        assert_eq!(word(8), 0xd400_0001); // svc #0
        // adr x1 at entry+4 reaches back to ACT_OFFSET (-36 bytes).
        assert_eq!(word(ENTRY_OFFSET + 4), 0x10ff_fee1);
        // The last word branches back 7 instructions to the loop's top.
        assert_eq!(word(c.len() - 4), 0x17ff_fff9);
    }

    /// Disassembles `code` with LLVM's `llvm-mc`, None when it is not installed.
    fn disassemble(triple: &str, code: &[u8]) -> Option<Vec<String>> {
        use std::io::Write;
        let mut child = std::process::Command::new("llvm-mc")
            .args(["--disassemble", &format!("-triple={triple}")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let hex: Vec<String> = code.iter().map(|b| format!("0x{b:02x}")).collect();
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(hex.join(" ").as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("llvm-mc");
        assert!(out.status.success());
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| {
                    let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
                    // Drop x86 comments ("# imm = 0x..."); aarch64's "#15" has no space after '#'.
                    l.split(" # ").next().unwrap_or_default().to_string()
                })
                .filter(|l| l != ".text")
                .collect(),
        )
    }

    /// Checks the machine code against an independent disassembler, when
    /// this machine has one (Debian's llvm package).
    #[test]
    fn disassembles_to_the_intended_program() {
        let x86 = x86_64_code();
        let Some(handler) = disassemble("x86_64", &x86[..9]) else {
            eprintln!("llvm-mc not installed: skipping the disassembly check");
            return;
        };
        assert_eq!(handler, ["movl $231, %eax", "xorl %edi, %edi", "syscall"]);
        let act = addr(ACT_OFFSET);
        let entry = disassemble("x86_64", &x86[ENTRY_OFFSET..]).expect("llvm-mc");
        let mut want = Vec::new();
        for sig in [15, 2] {
            want.extend([
                "movl $13, %eax".to_string(),
                format!("movl ${sig}, %edi"),
                format!("movl ${act}, %esi"),
                "xorl %edx, %edx".to_string(),
                "movl $8, %r10d".to_string(),
                "syscall".to_string(),
            ]);
        }
        want.extend(["movl $34, %eax", "syscall", "jmp -9"].map(String::from));
        assert_eq!(entry, want);

        let a64 = aarch64_code();
        let handler = disassemble("aarch64", &a64[..12]).expect("llvm-mc");
        assert_eq!(handler, ["mov x0, #0", "mov x8, #94", "svc #0"]);
        let entry = disassemble("aarch64", &a64[ENTRY_OFFSET..]).expect("llvm-mc");
        let mut want = Vec::new();
        for (sig, back) in [(15, -36), (2, -60)] {
            want.extend([
                format!("mov x0, #{sig}"),
                format!("adr x1, #{back}"), // lands on ACT_OFFSET
                "mov x2, #0".to_string(),
                "mov x3, #8".to_string(),
                "mov x8, #134".to_string(),
                "svc #0".to_string(),
            ]);
        }
        for reg in 0..5 {
            want.push(format!("mov x{reg}, #0"));
        }
        want.extend(["mov x8, #73", "svc #0", "b #-28"].map(String::from));
        assert_eq!(entry, want);
    }

    #[test]
    fn image_reference_and_tar() {
        let image = pause_image();
        assert!(image.starts_with("km/pause:"), "{image}");
        assert_eq!(image, pause_image(), "stable");
        if program_for(std::env::consts::ARCH).is_none() {
            let err = rootfs_tar().expect_err("unsupported");
            assert!(err.to_string().contains("--pause-image"), "{err}");
            return;
        }
        let tar_bytes = rootfs_tar().expect("tar");
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let entries: Vec<(String, u32, u64)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (
                    e.path().expect("path").display().to_string(),
                    h.mode().expect("mode"),
                    h.size().expect("size"),
                )
            })
            .collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, "pause");
        assert_eq!(entries[0].1, 0o755);
        assert!(entries[0].2 > 120);
    }

    /// Runs the program directly on the host: it sleeps, and SIGTERM ends it
    /// with status 0.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn runs_and_exits_on_sigterm() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pause");
        std::fs::write(&path, program_for("x86_64").expect("x86_64")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for signal in ["TERM", "INT"] {
            let mut child = std::process::Command::new(&path).spawn().expect("spawn");
            std::thread::sleep(Duration::from_millis(200));
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "still sleeping"
            );
            let status = std::process::Command::new("kill")
                .args([format!("-{signal}"), child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
            let started = Instant::now();
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    assert_eq!(status.code(), Some(0), "SIG{signal}");
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "SIG{signal} ignored"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Imports the image into Docker, runs it as PID 1 of a container and
    /// stops it: SIGTERM must end it at once with exit code 0.
    #[tokio::test]
    async fn pause_container_stops_promptly() {
        let rt = Runtime::connect(None).await.expect("docker");
        let image = rt.ensure_pause_image().await.expect("import");
        assert_eq!(image, pause_image());
        // A second call finds it present.
        assert_eq!(rt.ensure_pause_image().await.expect("again"), image);
        let name = format!("km-test-pause-{}", uuid::Uuid::new_v4().simple());
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            ..Default::default()
        };
        let id = rt.create(&name, body).await.expect("create");
        let result = async {
            rt.start(&id).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let info = rt.inspect(&id).await?;
            assert!(info.running, "pause keeps running: {info:?}");
            let started = Instant::now();
            rt.stop(&id, Duration::from_secs(10)).await?;
            let took = started.elapsed();
            let info = rt.inspect(&id).await?;
            Ok::<_, crate::executor::runtime::RuntimeError>((took, info))
        }
        .await;
        rt.remove(&id).await.expect("remove");
        let (took, info) = result.expect("run and stop");
        assert!(took < Duration::from_millis(1500), "stop took {took:?}");
        assert!(!info.running);
        assert_eq!(info.exit_code, Some(0), "{info:?}");
    }
}
