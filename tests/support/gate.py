"""A TCP forwarder: listens on 127.0.0.1:LISTEN and relays every connection to 127.0.0.1:TARGET.

Tests put it between the daemon and moto to make STS unreachable (gate not started, or killed)
and reachable again (gate started), without touching moto's state.

Usage: python gate.py LISTEN_PORT TARGET_PORT
"""

import socket
import sys
import threading


def pump(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main(listen_port, target_port):
    server = socket.create_server(("127.0.0.1", listen_port), reuse_port=False)
    print("ready", flush=True)
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", target_port))
        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
