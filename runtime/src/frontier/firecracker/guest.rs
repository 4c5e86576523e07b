//! A minimal x86-64 ELF guest, generated in code: it writes a marker to the
//! serial port (COM1, 0x3f8) and then either resets the machine through the
//! keyboard controller (port 0x64, value 0xFE: Firecracker then exits) or
//! halts forever (a VM that stays "running", for pause/snapshot tests).
//!
//! Firecracker loads an ELF `vmlinux` at its physical load address (at or
//! above 1 MiB) and enters it in 64-bit mode with the low memory identity
//! mapped, so a few position-independent instructions suffice. It runs on a
//! software KVM too, where a Linux guest cannot.

use std::path::Path;

use crate::frontier::FrontierError;

/// What the guest does after writing its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Reset through the keyboard controller: the VMM exits (status 0).
    Reset,
    /// `cli; hlt` forever: the VM stays running until stopped.
    Halt,
}

/// The guest's load (and physical) address: 1 MiB.
pub const LOAD_ADDR: u64 = 0x10_0000;
/// Largest marker accepted.
pub const MAX_MARKER: usize = 4096;

/// Build the guest image: an ELF64 executable with one `PT_LOAD` segment.
pub fn build(marker: &[u8], ending: Ending) -> Result<Vec<u8>, FrontierError> {
    if marker.is_empty() || marker.len() > MAX_MARKER {
        return Err(FrontierError::Spec(format!(
            "minimal guest marker must be 1..={MAX_MARKER} bytes, got {}",
            marker.len()
        )));
    }
    let tail: &[u8] = match ending {
        // mov al, 0xfe; out 0x64, al; hlt; jmp $-1
        Ending::Reset => &[0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd],
        // cli; hlt; jmp $-1
        Ending::Halt => &[0xfa, 0xf4, 0xeb, 0xfd],
    };
    let code_len = 20 + tail.len();
    // lea rsi, [rip + disp]: disp counts from the end of the lea (offset 11).
    let disp = (code_len - 11) as i32;
    let mut code = Vec::with_capacity(code_len + marker.len());
    code.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    code.extend_from_slice(&[0x48, 0x8d, 0x35]); // lea rsi, [rip+disp32]
    code.extend_from_slice(&disp.to_le_bytes());
    code.push(0xb9); // mov ecx, imm32
    code.extend_from_slice(&(marker.len() as u32).to_le_bytes());
    code.extend_from_slice(&[0xac, 0xee, 0xe2, 0xfc]); // 1: lodsb; out dx, al; loop 1b
    code.extend_from_slice(tail);
    debug_assert_eq!(code.len(), code_len);
    code.extend_from_slice(marker);

    const EHDR: u64 = 64;
    const PHDR: u64 = 56;
    let total = EHDR + PHDR + code.len() as u64;
    let entry = LOAD_ADDR + EHDR + PHDR;
    let mut elf = Vec::with_capacity(total as usize);
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, SysV
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    elf.extend_from_slice(&entry.to_le_bytes());
    elf.extend_from_slice(&EHDR.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&(EHDR as u16).to_le_bytes());
    elf.extend_from_slice(&(PHDR as u16).to_le_bytes());
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    // Program header: PT_LOAD, R+X, the whole file at LOAD_ADDR.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&total.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&total.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    elf.extend_from_slice(&code);
    Ok(elf)
}

/// Build the guest and write it to `path`.
pub fn write(path: &Path, marker: &[u8], ending: Ending) -> Result<(), FrontierError> {
    let image = build(marker, ending)?;
    std::fs::write(path, image).map_err(|source| FrontierError::Io {
        what: format!("write minimal guest {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_layout() {
        let img = build(b"HELLO\n", Ending::Reset).unwrap();
        assert_eq!(&img[..4], b"\x7fELF");
        assert_eq!(img.len(), 64 + 56 + 27 + 6);
        let entry = u64::from_le_bytes(img[24..32].try_into().unwrap());
        assert_eq!(entry, LOAD_ADDR + 120);
        // The lea displacement points at the marker.
        let disp = i32::from_le_bytes(img[127..131].try_into().unwrap());
        assert_eq!(&img[120 + 11 + disp as usize..], b"HELLO\n");
        let img = build(b"X", Ending::Halt).unwrap();
        let disp = i32::from_le_bytes(img[127..131].try_into().unwrap());
        assert_eq!(&img[120 + 11 + disp as usize..], b"X");
    }

    #[test]
    fn rejects_bad_markers() {
        assert!(build(b"", Ending::Reset).is_err());
        assert!(build(&[b'a'; MAX_MARKER + 1], Ending::Reset).is_err());
    }
}
