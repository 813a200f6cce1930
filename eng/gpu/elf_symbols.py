#!/usr/bin/env python3
"""The dynamic symbols of ELF64 little-endian shared objects, for check-symbols.sh where `nm` (binutils) is missing.

    elf_symbols.py undefined FILE      unversioned undefined strong symbols (nm -D --undefined-only, type U, no @VERSION)
    elf_symbols.py defined FILE...     defined dynamic symbols (nm -D --defined-only), one per line

Reads .dynsym, .dynstr and .gnu.version directly; standard library only.
"""
import mmap
import struct
import sys

SHT_DYNSYM = 11
SHT_GNU_VERSYM = 0x6fffffff
SHN_UNDEF = 0
STB_WEAK = 2


def dynamic_symbols(path):
    """Yields (name, defined, weak, versioned) for every .dynsym entry but the first."""
    with open(path, 'rb') as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # LibTorch libraries are hundreds of MB
    if data[:4] != b'\x7fELF' or data[4] != 2 or data[5] != 1:
        raise ValueError(f'{path}: not a 64-bit little-endian ELF file')
    e_shoff, = struct.unpack_from('<Q', data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from('<HH', data, 0x3A)
    sections = []
    for i in range(e_shnum):
        (sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign,
         sh_entsize) = struct.unpack_from('<IIQQQQIIQQ', data, e_shoff + i * e_shentsize)
        sections.append((sh_type, sh_offset, sh_size, sh_link, sh_entsize))
    dynsym = next((s for s in sections if s[0] == SHT_DYNSYM), None)
    if dynsym is None:
        return
    versym = next((s for s in sections if s[0] == SHT_GNU_VERSYM), None)
    _, off, size, link, entsize = dynsym
    strtab_off = sections[link][1]
    count = size // (entsize or 24)
    for i in range(1, count):
        st_name, st_info, st_other, st_shndx, st_value, st_size = struct.unpack_from('<IBBHQQ', data, off + i * 24)
        end = data.find(b'\0', strtab_off + st_name)
        name = data[strtab_off + st_name:end].decode('utf-8', 'replace')
        version = struct.unpack_from('<H', data, versym[1] + i * 2)[0] & 0x7fff if versym else 1
        yield name, st_shndx != SHN_UNDEF, (st_info >> 4) == STB_WEAK, version > 1


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ('undefined', 'defined'):
        sys.exit(__doc__)
    names = set()
    if sys.argv[1] == 'undefined':
        for name, defined, weak, versioned in dynamic_symbols(sys.argv[2]):
            if not defined and not weak and not versioned and name:
                names.add(name)
    else:
        for path in sys.argv[2:]:
            for name, defined, _, _ in dynamic_symbols(path):
                if defined and name:
                    names.add(name)
    sys.stdout.write(''.join(n + '\n' for n in sorted(names)))


if __name__ == '__main__':
    main()
