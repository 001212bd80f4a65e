"""For the Python tests that start compressd themselves: its first stdout line."""
import re
import threading


def wait_until_listening(process, timeout=60):
    """Reads `process`'s stdout on a daemon thread, which keeps draining it for the process's
    whole life, and waits for compressd's "compressd listening on HOST:PORT" line.

    Returns (address, thread): the HOST:PORT it gave, or None when the line did not come within
    `timeout` seconds, and the reading thread (it ends when the process closes stdout)."""
    found = threading.Event()
    address = []

    def read_stdout():
        for raw in process.stdout:
            match = re.match(r"compressd listening on (\S+)", raw.decode(errors="replace"))
            if match and not found.is_set():
                address.append(match.group(1))
                found.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    found.wait(timeout)
    return (address[0] if address else None), reader
