"""HTTP/2 on both sides of Envoy: a client that sends what no HTTP/2 library would (unvalidated
header values, trailers), and an upstream that records each request's headers and trailers as a
gRPC or HTTP/2 API would receive them. Stubs of ours: the hostile part is the client."""

import socket
import threading
import time


def h2_request(port, headers):
    """One HTTP/2 (prior knowledge) request with unvalidated headers; returns the status, or
    "reset" when the stream or connection was refused."""
    import h2.config
    import h2.connection
    import h2.events
    cfg = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                    normalize_outbound_headers=False, validate_inbound_headers=False)
    conn = h2.connection.H2Connection(config=cfg)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers, end_stream=True)
        s.sendall(conn.data_to_send())
        deadline = time.time() + 10
        while time.time() < deadline:
            data = s.recv(65536)
            if not data:
                return "reset"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    return int(dict(ev.headers)[b":status"])
                if isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    return "reset"
            s.sendall(conn.data_to_send())
    return "timeout"


class H2Echo:
    """An HTTP/2 (prior knowledge) upstream that records each request's headers and trailers, as
    a gRPC or HTTP/2 API would receive them. A stub of ours: the hostile part is the client."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, s):
        import h2.config
        import h2.connection
        import h2.events
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        streams = {}
        with s:
            while True:
                try:
                    data = s.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = {"headers": [(k.decode(), v.decode()) for k, v in ev.headers],
                                                 "trailers": [], "body": b""}
                    elif isinstance(ev, h2.events.DataReceived):
                        streams[ev.stream_id]["body"] += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.TrailersReceived):
                        streams[ev.stream_id]["trailers"] = [(k.decode(), v.decode()) for k, v in ev.headers]
                    elif isinstance(ev, h2.events.StreamEnded):
                        with self.lock:
                            self.requests.append(streams.pop(ev.stream_id))
                        conn.send_headers(ev.stream_id, [(":status", "200"), ("content-length", "2")])
                        conn.send_data(ev.stream_id, b"ok", end_stream=True)
                s.sendall(conn.data_to_send())

    def stop(self):
        self.sock.close()


def h2_request_with_trailers(port, headers, body, trailers):
    """Headers, a body, then trailers, on one HTTP/2 stream; returns the status."""
    import h2.config
    import h2.connection
    import h2.events
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers)
        conn.send_data(sid, body)
        conn.send_headers(sid, trailers, end_stream=True)
        s.sendall(conn.data_to_send())
        deadline = time.time() + 10
        while time.time() < deadline:
            data = s.recv(65536)
            if not data:
                return "reset"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    return int(dict(ev.headers)[b":status"])
                if isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    return "reset"
            s.sendall(conn.data_to_send())
    return "timeout"
