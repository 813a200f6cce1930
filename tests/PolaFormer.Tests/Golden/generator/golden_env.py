"""Settings that must be in place before torch is imported (no torch import here)."""
import os
import sys


def apply_onednn_isa(default):
    """Caps oneDNN's CPU kernels (ONEDNN_MAX_CPU_ISA) from --onednn-isa (or the default) before torch loads it:
    PyTorch's CPU convolutions run through oneDNN, whose kernels differ per instruction set in the last bits.
    'none' leaves the variable alone. Returns the value applied."""
    isa = default
    for i, a in enumerate(sys.argv):
        if a == '--onednn-isa' and i + 1 < len(sys.argv):
            isa = sys.argv[i + 1]
        elif a.startswith('--onednn-isa='):
            isa = a.split('=', 1)[1]
    if isa.lower() != 'none':
        os.environ['ONEDNN_MAX_CPU_ISA'] = isa
    return isa
