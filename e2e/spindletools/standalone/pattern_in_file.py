"""e2e/standalone/integrity: the pattern qemu-io wrote through iSCSI (pattern 11 of its run on
the 20 MiB-wrapped offsets, 3 × 256 KiB + 7 bytes) is at the same place in the backing file.

  python3 -m spindletools.standalone.pattern_in_file FILE
"""
import sys


def main():
    off = (11 * 7919 * 512 + 11 * 3) % (20 * 1048576)
    length = 3 * 262144 + 7
    with open(sys.argv[1], "rb") as f:
        f.seek(off)
        data = f.read(length)
    if data != bytes([11]) * length:
        sys.exit("pattern 11 not found in the backing file where it was written")


if __name__ == "__main__":
    main()
