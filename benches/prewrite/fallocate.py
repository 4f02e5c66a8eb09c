"""fallocate(2) a fresh file and time it. Usage: fallocate.py default|wz PATH BYTES
default: mode 0 (unwritten extents); wz: FALLOC_FL_WRITE_ZEROES (0x80, Linux
6.17+: written, zeroed extents through the device's write-zeroes command).
Prints the seconds it took (fsync included), or the error and exits 1."""
import ctypes, os, sys, time

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
mode = {"default": 0, "wz": 0x80}[sys.argv[1]]
path, size = sys.argv[2], int(sys.argv[3])
fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
t = time.monotonic()
if libc.fallocate(fd, mode, 0, size) != 0:
    print(os.strerror(ctypes.get_errno()))
    os.close(fd)
    os.unlink(path)
    sys.exit(1)
os.fsync(fd)
print("%.3f" % (time.monotonic() - t))
os.close(fd)
