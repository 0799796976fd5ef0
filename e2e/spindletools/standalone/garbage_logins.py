"""Garbage instead of a login, on fresh connections: 1, 47, 48, 4096 and 70000 random bytes (a
Login Request opcode in front from 48 bytes on, a random header behind it). The target may
answer or close; e2e/standalone/auth then checks the agent and other sessions took no harm.

  python3 -m spindletools.standalone.garbage_logins HOST PORT
"""
import os
import socket
import sys


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    for n in (1, 47, 48, 4096, 70000):
        s = socket.create_connection((host, port), timeout=5)
        junk = bytearray(os.urandom(n))
        if n >= 48:
            junk[0] = 0x43  # a Login Request opcode with a random header behind it
        try:
            s.sendall(bytes(junk))
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            while s.recv(65536):
                pass
        except OSError:
            pass
        s.close()


if __name__ == "__main__":
    main()
