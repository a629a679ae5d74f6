#!/usr/bin/env python3
"""faultproxy: a fault-injecting HTTP forwarder for the reliability suites.

    faultproxy.py PORT DDB_URL SQS_URL STATS_FILE [--fault P] [--delay P] [--ddb-latency S]

Listens on 127.0.0.1:PORT. Each request goes to DynamoDB (X-Amz-Target
DynamoDB_*) or to the SQS/SNS server (everything else), body unchanged (so
fauxqs's QueueUrls stay valid). With probability --fault it is answered
instead with an AWS-shaped error (DynamoDB: 400 ThrottlingException or
ProvisionedThroughputExceededException; SQS: 400 JSON throttling; SNS: 400
XML Throttling; any: 500 or 503); with probability --delay it is held
0.2-1 s and forwarded. --ddb-latency holds every DynamoDB request S
seconds before forwarding it (a slow DynamoDB). Counters go to STATS_FILE
(JSON) every 0.5 s.

    --fail-delete N            the first N DeleteMessageBatch entries are
                               answered as Failed entries (SenderFault false,
                               InternalError: SQS asks to try again), not
                               forwarded; the rest of their request is
    --fail-delete-permanent N  the same with ReceiptHandleIsInvalid
                               (SenderFault true: a permanent failure)
The request forwarded without those entries is no longer the signed one:
fine for the local servers, which do not check signatures. The stats count
"delete_entries" (every entry seen) and "delete_failed" (answered Failed),
and "delete_tries" (how often each receipt handle was sent, keyed by a
short hash of it).
"""
import http.client, json, random, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, ddb, sqs, stats_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
args = sys.argv[5:]
P_FAULT = float(args[args.index("--fault") + 1]) if "--fault" in args else 0.0
P_DELAY = float(args[args.index("--delay") + 1]) if "--delay" in args else 0.0
FAIL_DELETE = int(args[args.index("--fail-delete") + 1]) if "--fail-delete" in args else 0
FAIL_DELETE_PERM = int(args[args.index("--fail-delete-permanent") + 1]) if "--fail-delete-permanent" in args else 0
DDB_LATENCY = float(args[args.index("--ddb-latency") + 1]) if "--ddb-latency" in args else 0.0
stats = {"requests": 0, "forwarded": 0, "faults": 0, "delayed": 0, "upstream_errors": 0,
         "by_kind": {}, "delete_entries": 0, "delete_failed": 0, "delete_tries": {}}
lock = threading.Lock()

def bump(key, kind=None):
    with lock:
        stats[key] += 1
        if kind:
            stats["by_kind"][kind] = stats["by_kind"].get(kind, 0) + 1

def fault(service):
    r = random.random()
    if r < 0.25:
        return 503, "text/plain", b"Service Unavailable", "503"
    if r < 0.4:
        return 500, "text/plain", b"Internal Server Error", "500"
    if service == "ddb":
        t = random.choice(["ThrottlingException", "ProvisionedThroughputExceededException"])
        body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#" + t, "message": "Rate exceeded"})
        return 400, "application/x-amz-json-1.0", body.encode(), "ddb-" + t
    if service == "sqs":
        body = json.dumps({"__type": "com.amazonaws.sqs#ThrottlingException", "message": "Rate exceeded"})
        return 400, "application/x-amz-json-1.0", body.encode(), "sqs-Throttling"
    body = ("<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Sender</Type>"
            "<Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
            "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>")
    return 400, "text/xml", body.encode(), "sns-Throttling"

def take_delete_faults(body):
    """Splits a DeleteMessageBatch body: (body to forward or None, Failed entries)."""
    global FAIL_DELETE, FAIL_DELETE_PERM
    import hashlib
    req = json.loads(body)
    keep, failed = [], []
    with lock:
        for en in req.get("Entries", []):
            stats["delete_entries"] += 1
            h = hashlib.sha256(en.get("ReceiptHandle", "").encode()).hexdigest()[:12]
            stats["delete_tries"][h] = stats["delete_tries"].get(h, 0) + 1
            if FAIL_DELETE > 0:
                FAIL_DELETE -= 1
                failed.append({"Id": en["Id"], "SenderFault": False, "Code": "InternalError",
                               "Message": "injected by faultproxy"})
            elif FAIL_DELETE_PERM > 0:
                FAIL_DELETE_PERM -= 1
                failed.append({"Id": en["Id"], "SenderFault": True, "Code": "ReceiptHandleIsInvalid",
                               "Message": "injected by faultproxy"})
            else:
                keep.append(en)
        stats["delete_failed"] += len(failed)
    if not failed:
        return body, []
    if not keep:
        return None, failed
    req["Entries"] = keep
    return json.dumps(req).encode(), failed

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def answer(self, code, ctype, body, headers=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        target = self.headers.get("X-Amz-Target", "")
        service = "ddb" if target.startswith("DynamoDB") else "sqs" if target.startswith("AmazonSQS") else "sns"
        bump("requests")
        if random.random() < P_FAULT:
            code, ctype, b, kind = fault(service)
            bump("faults", kind)
            return self.answer(code, ctype, b)
        if random.random() < P_DELAY:
            bump("delayed")
            time.sleep(random.uniform(0.2, 1.0))
        if service == "ddb" and DDB_LATENCY > 0:
            time.sleep(DDB_LATENCY)
        failed = []
        if target == "AmazonSQS.DeleteMessageBatch" and ("--fail-delete" in args or "--fail-delete-permanent" in args):
            body, failed = take_delete_faults(body)
            if body is None:
                out = json.dumps({"Successful": [], "Failed": failed}).encode()
                return self.answer(200, "application/x-amz-json-1.0", out)
        up = urllib.parse.urlsplit(ddb if service == "ddb" else sqs)
        try:
            c = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
            hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
            if failed:
                hdrs = {k: v for k, v in hdrs.items() if k.lower() != "content-length"}
                hdrs["Content-Length"] = str(len(body))
            c.request("POST", self.path, body=body, headers=hdrs)
            r = c.getresponse()
            rb = r.read()
            c.close()
        except Exception as e:
            bump("upstream_errors")
            return self.answer(502, "text/plain", ("upstream: %s" % e).encode())
        bump("forwarded")
        if failed and r.status == 200:
            reply = json.loads(rb or b"{}")
            reply["Failed"] = reply.get("Failed", []) + failed
            rb = json.dumps(reply).encode()
        self.answer(r.status, r.getheader("Content-Type", "application/octet-stream"), rb)
    do_GET = do_POST

def dump():
    while True:
        with lock:
            s = json.dumps(stats)
        with open(stats_file + ".tmp", "w") as f:
            f.write(s)
        import os
        os.replace(stats_file + ".tmp", stats_file)
        time.sleep(0.5)

ThreadingHTTPServer.allow_reuse_address = True
ThreadingHTTPServer.daemon_threads = True
srv = ThreadingHTTPServer(("127.0.0.1", port), H)
threading.Thread(target=dump, daemon=True).start()
print("listening", port, flush=True)
srv.serve_forever()
