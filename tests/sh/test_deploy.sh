#!/usr/bin/env bash
# tests/sh/test_deploy.sh: the container and AWS deployment (Dockerfile,
# deploy/entrypoint.sh, deploy/cloudformation.yaml, pipelines/compose.yaml,
# docs/deploy-aws.md), checked as far as a machine without a container engine
# or an AWS account allows:
#   - compose.yaml and the template parse (PyYAML, with CloudFormation's tags);
#     every compose service runs a real tool; every ZeroMQ link (compose and
#     template) has one binder with one replica and connectors that name it;
#     the template's references and intrinsic functions resolve;
#   - the template's tables, indexes, TTL and queues are what `delayer init`
#     creates on the local stack, and `init` accepts resources made to the
#     template's description as its own;
#   - IAM: the policies in docs/deploy-aws.md are the template's; each
#     component's policy grants exactly the actions its code can reach
#     (a call graph of tools/*.c and lib/*.c); every call each component makes
#     in a real run (recorded by a proxy) is allowed by its policy, resource
#     included;
#   - the entrypoint maps every option of every stage to a variable, and
#     nothing else;
#   - the Dockerfile's package lists provide every header the build includes,
#     every library it links and every library the binaries need at run time;
#   - the runtime layout: a chroot holding only the binaries, the entrypoint,
#     /bin/sh, the shared libraries `ldd` lists and a CA bundle, where every
#     tool starts through the entrypoint as uid 10001, and a whole pipeline
#     (init, the CLI, all five stages, watch) runs configured by environment
#     only, over TLS (a CA in the chroot's /etc/ssl/certs, as compose.yaml
#     does) and CURVE keys given as text, with pipe host names resolved
#     again when they change.
# The chroot tests need root (chroot, mknod); without it they are skipped.
export SHUNIT_COLOR=none
REPO=$(cd -P -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/../.." && pwd -P)
cd "$REPO" || exit 1
BIN=${DELAYER_BIN:-bin}
case $BIN in /*) ;; *) BIN=$REPO/$BIN ;; esac
STAGES="ddb-scan-due sqs-push sqs-drain sns-publish state-update"
# shellcheck source=../lib/stack.sh
. "$REPO/tests/lib/stack.sh"

W=
PIDS=()
sanitized() { ldd "$1" 2>/dev/null | grep -qE 'lib(a|ub)san'; }

# release_bin: RBIN holds release builds of the tools, else skip.
release_bin() {
  [ -n "$RBIN" ] && return 0
  echo "skipped: no release build in $REPO/bin (run make) for the image layout checks" >&2
  startSkipping
  return 1
}

oneTimeSetUp() {
  local t
  for t in $STAGES delayer delayer-keygen aws-call; do
    [ -x "$BIN/$t" ] || { echo "missing $BIN/$t (run make)" >&2; return 1; }
  done
  python3 -c 'import yaml' 2>/dev/null || { echo "python3 with PyYAML is needed" >&2; return 1; }
  # The image carries release builds: the layout checks use them, also when
  # the suites run on sanitizer builds (make sanitize), whose binaries need
  # libasan and /proc.
  RBIN=$BIN
  if sanitized "$BIN/delayer"; then
    RBIN=$REPO/bin
    [ -x "$RBIN/delayer" ] && ! sanitized "$RBIN/delayer" || RBIN=
  fi
  W=$(mktemp -d "${TMPDIR:-/tmp}/delayer-deploy.XXXXXX") || return 1
  chmod 755 "$W"
  write_helpers
}

oneTimeTearDown() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  stack_stop
  # DELAYER_KEEP_TEST_DIR=1 keeps the logs, keys and chroot for a look.
  if [ -n "$W" ] && [ -z "${DELAYER_KEEP_TEST_DIR:-}" ]; then rm -rf -- "$W"; else echo "kept $W" >&2; fi
}

# stack_pfx: the local stack up (the test fails without it) and a fresh
# deployment prefix in the caller's local pfx.
stack_pfx() {
  stack_start || { fail "no local stack"; return 1; }
  pfx=$(new_prefix)
}

write_helpers() {
  # ---- cfn.py: the template with its tags, and a small evaluator.
  cat >"$W/cfn.py" <<'EOF'
import re, yaml

class Loader(yaml.SafeLoader):
    pass

def _tag(tag, name):
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            v = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                v = v.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            v = loader.construct_sequence(node, deep=True)
        else:
            v = loader.construct_mapping(node, deep=True)
        return {name: v}
    Loader.add_constructor(tag, construct)

for _t in ("Ref", "Condition"):
    _tag("!" + _t, _t)
for _t in ("Sub GetAtt If Not Equals And Or Split Join Select FindInMap Base64 Cidr "
           "ImportValue GetAZs").split():
    _tag("!" + _t, "Fn::" + _t)

def load(path):
    with open(path) as f:
        return yaml.load(f, Loader=Loader)

PSEUDO = {"AWS::Partition", "AWS::Region", "AWS::AccountId", "AWS::StackName", "AWS::StackId",
          "AWS::URLSuffix", "AWS::NoValue", "AWS::NotificationARNs"}

def resolve(v, params, conds):
    """Evaluates Ref/Sub/If/Split/Equals/Not with the given parameter values
    (pseudo parameters included) and condition values."""
    r = lambda x: resolve(x, params, conds)
    if isinstance(v, list):
        return [r(x) for x in v]
    if not isinstance(v, dict):
        return v
    if len(v) == 1:
        (k, a), = v.items()
        if k == "Ref":
            return params.get(a, "<ref:%s>" % a)
        if k == "Fn::Sub":
            s, extra = (a, {}) if isinstance(a, str) else (a[0], r(a[1]))
            return re.sub(r"\$\{([^}!]+)\}",
                          lambda m: str(extra.get(m.group(1), params.get(m.group(1), "<%s>" % m.group(1)))), s)
        if k == "Fn::If":
            return r(a[1]) if conds[a[0]] else r(a[2])
        if k == "Fn::Split":
            return r(a[1]).split(a[0])
        if k == "Fn::GetAtt":
            return "<%s.%s>" % tuple(a)
        if k == "Fn::Equals":
            return r(a[0]) == r(a[1])
        if k == "Fn::Not":
            return not r(a[0])
    return {k: r(x) for k, x in v.items()}

def policies(t, params, conds):
    """{resource name: policy document} of the IAM roles and managed policies."""
    out = {}
    for name, res in t["Resources"].items():
        p = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role" and p.get("Policies"):
            assert len(p["Policies"]) == 1, name
            out[name] = resolve(p["Policies"][0]["PolicyDocument"], params, conds)
        elif res["Type"] == "AWS::IAM::ManagedPolicy":
            out[name] = resolve(p["PolicyDocument"], params, conds)
    return out

def listify(x):
    return x if isinstance(x, list) else [x]

# Which policy each component (label) runs with.
ROLE = {"ddb-scan-due": "ScanDueRole", "sqs-push": "SqsPushRole", "sqs-drain": "SqsDrainRole",
        "sqs-drain-dead": "SqsDrainDeadRole", "sns-publish": "SnsPublishRole",
        "state-update": "StateUpdateRole", "init": "InitRole", "cli": "CliPolicy"}

# API operation -> IAM action (a batch call is authorised by its single action).
BATCH = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage",
         "ChangeMessageVisibilityBatch": "ChangeMessageVisibility", "PublishBatch": "Publish"}
DDB = ("GetItem PutItem UpdateItem DeleteItem BatchGetItem BatchWriteItem Query Scan CreateTable "
       "DescribeTable DeleteTable UpdateTable DescribeTimeToLive UpdateTimeToLive ListTables "
       "TransactWriteItems TransactGetItems DescribeContinuousBackups UpdateContinuousBackups").split()
SQS = ("SendMessage SendMessageBatch ReceiveMessage DeleteMessage DeleteMessageBatch ChangeMessageVisibility "
       "ChangeMessageVisibilityBatch GetQueueAttributes SetQueueAttributes GetQueueUrl CreateQueue DeleteQueue "
       "PurgeQueue ListQueues TagQueue ListQueueTags").split()
SNS = ("Publish PublishBatch CreateTopic DeleteTopic GetTopicAttributes SetTopicAttributes Subscribe "
       "Unsubscribe ListTopics ListSubscriptions ListSubscriptionsByTopic ConfirmSubscription "
       "GetSubscriptionAttributes SetSubscriptionAttributes").split()
SERVICE = dict([(o, "dynamodb") for o in DDB] + [(o, "sqs") for o in SQS] + [(o, "sns") for o in SNS])

def action(op):
    return "%s:%s" % (SERVICE[op], BATCH.get(op, op))
EOF

  # ---- ops.py: which AWS operations each tool's code can reach.
  cat >"$W/ops.py" <<'EOF'
"""A call graph of lib/*.c and tools/*.c: top-level definitions (functions,
initialised variables such as command tables) are nodes; an identifier in a
body (not after . or ->) is an edge to the definition of that name (the same
file's first, then a non-static one in lib/); a string literal naming an AWS
operation marks the node as issuing it (ddb_call(s, "UpdateItem", ...),
sqs_call(c, "ReceiveMessage", ...), sns_form(&f, "Publish"), ...)."""
import glob, os, re
from cfn import SERVICE

TOKEN = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'', re.S)
IDENT = re.compile(r"(?<![\w.>])(?<!->)([A-Za-z_]\w*)")

def sanitize(text):
    lits = []
    def sub(m):
        t = m.group(0)
        if t.startswith("/"):
            return "\n" * t.count("\n") if t.startswith("/*") else ""
        if t.startswith("'"):
            return "0"
        lits.append(t[1:-1])
        return '"#%d"' % (len(lits) - 1)
    return TOKEN.sub(sub, text), lits

def chunks(path):
    text, lits = sanitize(open(path).read())
    out, cur, depth = [], [], 0
    for line in text.split("\n"):
        if depth == 0 and not cur and (not line.strip() or line[0] in " \t#}"):
            continue
        cur.append(line)
        depth += line.count("{") - line.count("}")
        if depth or not line.rstrip().endswith(("}", ";")):
            continue
        body, cur = "\n".join(cur), []
        head = body.split("{")[0]
        if "{" not in body:
            if "=" not in body:
                continue
            name = IDENT.findall(re.sub(r"\[.*?\]", "", body.split("=")[0]))[-1]
        elif "(" in head and "=" not in head:
            name = re.search(r"(\w+)\s*\(", head).group(1)
            body = body[len(head):]
        else:
            ids = IDENT.findall(re.sub(r"\[.*?\]", "", body.split("=")[0] if "=" in body else body.split("}")[-1]))
            if not ids:
                continue
            name = ids[-1]
        used = {lits[int(m.group(1))] for m in re.finditer(r'"#(\d+)"', body)
                if enclosing_call(body, m.start()) not in NOT_A_CALL}
        out.append((name, head.lstrip().startswith("static"), body, used))
    return out

# A literal counts as an operation only as an argument of a call (not in an
# initializer such as a table of names, nor compared or logged).
NOT_A_CALL = {None, "strcmp", "strncmp", "strcasecmp", "strncasecmp", "strstr", "memcmp", "aws_err_is",
              "log_ev", "log_msg", "printf", "fprintf", "snprintf", "if", "while", "switch", "sizeof"}

def enclosing_call(code, pos):
    """The name of the function whose argument list holds position pos, or
    None when an initializer, a block or a statement boundary comes first."""
    paren = brace = 0
    for i in range(pos - 1, -1, -1):
        ch = code[i]
        if ch == ")":
            paren += 1
        elif ch == "(":
            if paren == 0:
                m = re.search(r"(\w+)\s*$", code[:i])
                return m.group(1) if m else None
            paren -= 1
        elif ch == "}":
            brace += 1
        elif ch == "{":
            if brace == 0:
                return None
            brace -= 1
        elif ch == ";" and paren == 0:
            return None
    return None

class Graph:
    def __init__(self, repo):
        self.repo, self.nodes, self.glob = repo, {}, {}
        files = sorted(glob.glob(os.path.join(repo, "lib", "*.c")) + glob.glob(os.path.join(repo, "tools", "*.c")))
        for f in files:
            for name, static, code, used in chunks(f):
                refs = set(IDENT.findall(re.sub(r'"#\d+"', "", code))) - {name}
                ops = {s for s in used if s in SERVICE}
                k = (f, name)
                if k in self.nodes:
                    refs |= self.nodes[k][0]
                    ops |= self.nodes[k][1]
                self.nodes[k] = (refs, ops)
                if not static and os.sep + "lib" + os.sep in f:
                    self.glob[name] = k

    def resolve(self, f, name):
        return (f, name) if (f, name) in self.nodes else self.glob.get(name)

    def reach(self, tool, exclude):
        start = self.resolve(os.path.join(self.repo, "tools", tool + ".c"), "main")
        seen, todo = {start: None}, [start]
        while todo:
            k = todo.pop()
            for r in self.nodes[k][0]:
                t = self.resolve(k[0], r)
                if t and t not in seen and t[1] not in exclude:
                    seen[t] = k
                    todo.append(t)
        return seen

    def ops(self, tool, exclude=()):
        """(operations, {node: parent}) reachable from tools/TOOL.c's main."""
        exclude = set(exclude)
        seen = self.reach(tool, exclude)
        # store_events_flush (store_close calls it) publishes only what
        # store_event queued: a tool that never queues one publishes nothing.
        if "store_event" not in {k[1] for k in seen}:
            seen = self.reach(tool, exclude | {"store_events_flush"})
        return set().union(*(self.nodes[k][1] for k in seen)), seen

    def path(self, tool, op, exclude=()):
        ops, seen = self.ops(tool, exclude)
        for k in seen:
            if op in self.nodes[k][1]:
                p = []
                while k:
                    p.append(k[1])
                    k = seen[k]
                return " <- ".join(p)
        return "?"

    def cli_split(self):
        cmds = {k[1] for k in self.nodes if k[0].endswith(os.sep + "delayer.c") and k[1].startswith("cmd_")}
        return {"cli": {"cmd_init"}, "init": cmds - {"cmd_init"}}
EOF

  # ---- proxy.py: forwards to the local stack, records each call's action
  # and resource ARN per component (one port per component label).
  cat >"$W/proxy.py" <<'EOF'
import http.client, json, os, ssl, sys, threading, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
ddb, sqs, log_path, ports_path, cert, key = sys.argv[1:7]
labels = sys.argv[7:]
REGION, ACCOUNT = "us-east-1", "000000000000"
lock = threading.Lock()
logf = open(log_path, "a")

def arns(target, body, form):
    out = []
    if target.startswith("DynamoDB_"):
        d = json.loads(body or b"{}")
        base = "arn:aws:dynamodb:%s:%s:table/" % (REGION, ACCOUNT)
        if "TableName" in d:
            out.append(base + d["TableName"] + ("/index/" + d["IndexName"] if d.get("IndexName") else ""))
        out += [base + t for t in d.get("RequestItems", {})]
    elif target.startswith("AmazonSQS."):
        d = json.loads(body or b"{}")
        base = "arn:aws:sqs:%s:%s:" % (REGION, ACCOUNT)
        if "QueueUrl" in d:
            out.append(base + d["QueueUrl"].rstrip("/").rsplit("/", 1)[-1])
        elif "QueueName" in d:
            out.append(base + d["QueueName"])
    else:
        for k in ("TopicArn", "SubscriptionArn"):
            if k in form:
                out.append(form[k][0])
        if form.get("Action") == ["CreateTopic"]:
            out.append("arn:aws:sns:%s:%s:%s" % (REGION, ACCOUNT, form["Name"][0]))
    return out

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        # label "creds": a container credentials endpoint (ECS / EKS Pod Identity)
        with lock:
            logf.write(json.dumps({"label": self.server.label, "op": "GET " + self.path,
                                   "auth": self.headers.get("Authorization")}) + "\n")
            logf.flush()
        data = json.dumps({"AccessKeyId": "AKIDCONTAINERTEST", "SecretAccessKey": "container-secret",
                           "Token": "container-session-token", "Expiration": "2099-01-01T00:00:00Z"}).encode()
        self.send_response(200 if self.server.label == "creds" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = self.headers.get("X-Amz-Target", "")
        form = {} if target else urllib.parse.parse_qs(body.decode())
        op = target.split(".", 1)[1] if target else form.get("Action", ["?"])[0]
        up = urllib.parse.urlsplit(ddb if target.startswith("DynamoDB_") else sqs)
        c = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
        c.request("POST", self.path, body, {k: v for k, v in self.headers.items()
                                            if k.lower() not in ("connection", "keep-alive", "host")})
        resp = c.getresponse()
        data = resp.read()
        c.close()
        key = self.headers.get("Authorization", "").partition("Credential=")[2].split("/")[0]
        with lock:
            logf.write(json.dumps({"label": self.server.label, "op": op, "status": resp.status,
                                   "arns": arns(target, body, form), "key": key}) + "\n")
            logf.flush()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
servers = []
for label in labels:
    s = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    s.daemon_threads = True
    s.label = label
    s.socket = ctx.wrap_socket(s.socket, server_side=True)
    servers.append(s)
    threading.Thread(target=s.serve_forever, daemon=True).start()
with open(ports_path + ".tmp", "w") as f:
    for s in servers:
        f.write("%s %d\n" % (s.label, s.server_address[1]))
os.rename(ports_path + ".tmp", ports_path)
threading.Event().wait()
EOF
}

# ======================================================================
# compose.yaml

test_compose_parses_and_every_link_has_one_binder() {
  local out
  out=$(PYTHONPATH="$W" python3 - "$REPO" $STAGES 2>&1 <<'EOF'
import os, re, sys, yaml
repo, stages = sys.argv[1], sys.argv[2:]
c = yaml.safe_load(open(os.path.join(repo, "pipelines/compose.yaml")))
ep = open(os.path.join(repo, "deploy/entrypoint.sh")).read()
code = "".join(open(os.path.join(repo, d, f)).read() for d in ("lib", "tools")
               for f in os.listdir(os.path.join(repo, d)) if f.endswith(".c"))
bad = []
svc = c["services"]
binds, links, seen = {}, [], set()
for name, s in svc.items():
    img = s.get("image") == "delayer:local"
    if not img:
        continue
    b = s.get("build", {})
    if b.get("dockerfile") != "Dockerfile" or os.path.realpath(os.path.join(repo, "pipelines", b.get("context", ""))) != repo:
        bad.append("%s: not built from the repository's Dockerfile" % name)
    env = s.get("environment") or {}
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        bad.append("%s: environment must map names to strings" % name)
        continue
    for k in env:
        if not (k.startswith("AWS_") or re.search(r"\b%s\b" % k, ep) or '"%s"' % k in code):
            bad.append("%s: %s is read by nothing (entrypoint or tools)" % (name, k))
    stage = env.get("DELAYER_STAGE")
    if stage is None:
        cmd = s.get("command") or s.get("entrypoint") or []
        tool = next((x for x in cmd if not x.startswith("/")), None)
        if tool not in ("delayer", "delayer-keygen"):
            bad.append("%s: no DELAYER_STAGE and no tool named" % name)
        continue
    if stage not in stages or not os.path.exists(os.path.join(repo, "tools", stage + ".c")):
        bad.append("%s: DELAYER_STAGE=%s is not a stage tool" % (name, stage))
        continue
    seen.add(stage)
    if "command" in s or "entrypoint" in s:
        bad.append("%s: a stage service is configured by environment only (no command)" % name)
    reps = (s.get("deploy") or {}).get("replicas")
    if not isinstance(reps, int) or reps < 1:
        bad.append("%s: needs its own deploy.replicas >= 1" % name)
    for side in ("IN", "OUT"):
        for e in (env.get("DELAYER_" + side) or "").split(","):
            if not e:
                continue
            m = re.fullmatch(r"@tcp://0\.0\.0\.0:(\d+)", e)
            if m:
                binds[(name, side)] = int(m.group(1))
                if reps != 1:
                    bad.append("%s: binds %s but runs %s replicas" % (name, e, reps))
                continue
            m = re.fullmatch(r">tcp://([a-z0-9-]+):(\d+)", e)
            if not m:
                bad.append("%s: endpoint %r is neither @tcp://0.0.0.0:PORT nor >tcp://SERVICE:PORT" % (name, e))
                continue
            links.append((name, side, m.group(1), int(m.group(2))))
for name, side, peer, port in links:
    other = "OUT" if side == "IN" else "IN"
    if binds.get((peer, other)) != port:
        bad.append("%s: %s connects to %s:%d, where no %s binds" % (name, side, peer, port, other))
for st in stages:
    if st not in seen:
        bad.append("stage %s has no service" % st)
if not any((s.get("environment") or {}).get("DELAYER_QUEUE") == "dead" for s in svc.values()):
    bad.append("no sqs-drain reads the dead-letter queue")
init = svc.get("init", {})
if init.get("command", [])[:2] != ["delayer", "init"]:
    bad.append("no init job running `delayer init`")
print("\n".join(bad) if bad else "ok %d links" % len(links))
EOF
  )
  assertEquals "compose problems" "ok 5 links" "$out"
}

test_compose_has_no_variable_interpolation() {
  # Compose expands $NAME and ${NAME} itself; this file means none of that.
  local bad
  bad=$(sed 's/\$\$//g' pipelines/compose.yaml | grep -n '\$' || true)
  assertEquals "unescaped \$ in compose.yaml (write \$\$)" "" "$bad"
}

# ======================================================================
# the CloudFormation template

test_template_parses_and_its_references_resolve() {
  local out
  out=$(PYTHONPATH="$W" python3 - "$REPO" 2>&1 <<'EOF'
import re, sys, yaml, cfn
repo = sys.argv[1]
path = repo + "/deploy/cloudformation.yaml"
t = cfn.load(path)
bad = []
# CloudFormation supports neither YAML aliases nor merge keys.
for ev in yaml.parse(open(path)):
    if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None):
        bad.append("anchor/alias at line %d" % (ev.start_mark.line + 1))
params, res, conds = t["Parameters"], t["Resources"], t.get("Conditions", {})
names = set(params) | set(res) | cfn.PSEUDO
def walk(v, where):
    if isinstance(v, list):
        for x in v: walk(x, where)
    elif isinstance(v, dict):
        for k, a in v.items():
            if k == "Ref" and a not in names:
                bad.append("%s: Ref %s" % (where, a))
            elif k == "Fn::GetAtt" and a[0] not in res:
                bad.append("%s: GetAtt %s" % (where, a))
            elif k == "Fn::Sub":
                s = a if isinstance(a, str) else a[0]
                for var in re.findall(r"\$\{([^}!]+)\}", s):
                    if var.split(".")[0] not in names:
                        bad.append("%s: Sub ${%s}" % (where, var))
            elif k == "Fn::If" and a[0] not in conds:
                bad.append("%s: If %s" % (where, a[0]))
            walk(a, where)
walk(res, "Resources"); walk(conds, "Conditions"); walk(t.get("Outputs", {}), "Outputs")
for name, r in res.items():
    if not re.fullmatch(r"AWS::\w+::\w+", r.get("Type", "")):
        bad.append("%s: bad Type" % name)
    if r.get("Condition") and r["Condition"] not in conds:
        bad.append("%s: Condition" % name)
for name, p in params.items():
    if "Default" in p and "AllowedPattern" in p and not re.fullmatch(p["AllowedPattern"], str(p["Default"])):
        bad.append("parameter %s: default does not match its pattern" % name)
need = {"Prefix", "Shards", "RetentionDays", "Image"}
if not need <= set(params):
    bad.append("missing parameters %s" % (need - set(params)))
# The template's prefixes: ones delayer accepts (store_check_prefix: 1-60 of
# [A-Za-z0-9_-]), short enough for every IAM role name (64 characters),
# without "-" (test_iam_patterns_reach_no_other_deployment).
m = re.fullmatch(r"\^\[A-Za-z0-9\]\{1,(\d+)\}\$", params["Prefix"]["AllowedPattern"])
if not m:
    bad.append("Prefix pattern changed: check it against store_check_prefix and the role names")
else:
    longest = int(m.group(1))
    roles = [r["Properties"]["RoleName"]["Fn::Sub"] for r in res.values()
             if r["Type"] == "AWS::IAM::Role" and "RoleName" in r["Properties"]]
    for rn in roles:
        if len(rn.replace("${Prefix}", "x" * longest)) > 64:
            bad.append("role %s is longer than 64 characters with a %d-character prefix" % (rn, longest))
    if longest > 60:
        bad.append("Prefix allows more than delayer's 60 characters")
print("\n".join(bad) if bad else "ok")
EOF
  )
  assertEquals "template problems" "ok" "$out"
}

# IAM patterns stay inside their deployment: for every pair of prefixes the
# template accepts, no Resource of one deployment's policies (wildcards
# included) matches an ARN of the other's resources (tables, indexes,
# queues, watch queues, the events topic and user topics, names from
# docs/schema.md). `delayer` and `delayer-prod` were such a pair: `delayer-*`
# matched `delayer-prod-events`.
test_iam_patterns_reach_no_other_deployment() {
  local out
  out=$(PYTHONPATH="$W" python3 - "$REPO" 2>&1 <<'EOF'
import fnmatch, re, sys, cfn
repo = sys.argv[1]
t = cfn.load(repo + "/deploy/cloudformation.yaml")
pat = t["Parameters"]["Prefix"]["AllowedPattern"]
cands = ["delayer", "delayer-prod", "delayer-prod-eu", "delayer_prod", "delayerprod", "prod",
         "prod-eu", "prod-events", "p", "p-1", "p1", "a-b-c", "x" * 40]
ok = [c for c in cands if re.fullmatch(pat, c)]
A = "arn:aws:%s:us-east-1:000000000000:"
def arns(q):
    out = [A % "dynamodb" + "table/%s-%s" % (q, n) for n in ("schedules", "meta")]
    out += [A % "dynamodb" + "table/%s-schedules/index/%s" % (q, i) for i in ("due", "by_state")]
    out += [A % "sqs" + "%s-%s" % (q, n) for n in ("delay", "dead", "watch-0123456789")]
    # the events topic and user topics (`delayer init --topic NAME`: <prefix>-NAME)
    out += [A % "sns" + "%s-%s" % (q, n) for n in ("events", "t", "orders", "prod-events", "eu-events", "1")]
    return out
P = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "000000000000",
     "ExtraTopicArns": ""}
bad = []
if len(ok) < 3:
    bad.append("the Prefix pattern accepts too few of %s to test: %s" % (cands, ok))
for p in ok:
    pols = cfn.policies(t, dict(P, Prefix=p), {"HasExtraTopics": False, "Run": False})
    for role, doc in pols.items():
        for st in doc["Statement"]:
            for r in cfn.listify(st["Resource"]):
                for q in ok:
                    if q == p:
                        continue
                    for arn in arns(q):
                        if fnmatch.fnmatchcase(arn, r):
                            bad.append("deployment %s: %s's %s reaches %s of deployment %s"
                                       % (p, role, r, arn, q))
print("\n".join(sorted(set(bad))[:10]) if bad else "ok %d prefixes" % len(ok))
EOF
  )
  case $out in
    ok\ *) assertTrue true ;;
    *) fail "IAM reaches another deployment: $out" ;;
  esac
}

test_template_tasks_are_wired_like_compose() {
  local out
  out=$(PYTHONPATH="$W" python3 - "$REPO" $STAGES 2>&1 <<'EOF'
import re, sys, cfn
repo, stages = sys.argv[1], sys.argv[2:]
t = cfn.load(repo + "/deploy/cloudformation.yaml")
res = t["Resources"]
P = {"Prefix": "p", "AWS::Region": "r", "AWS::AccountId": "1", "AWS::Partition": "aws",
     "SqsPushCount": "2", "SnsPublishCount": "2", "Image": "img"}
C = {"Run": True, "HasExtraTopics": False}
bad, binds, links, seen = [], {}, [], set()
ingress = res["PipeIngress"]["Properties"]
names = {r["Properties"]["Name"]: n for n, r in res.items() if r["Type"] == "AWS::ServiceDiscovery::Service"}
for name, r in res.items():
    if r["Type"] != "AWS::ECS::Service":
        continue
    p = r["Properties"]
    task = res[p["TaskDefinition"]["Ref"]]["Properties"]
    (cd,) = task["ContainerDefinitions"]
    env = {e["Name"]: cfn.resolve(e["Value"], P, C) for e in cd["Environment"]}
    stage = env.get("DELAYER_STAGE")
    if stage not in stages:
        bad.append("%s: DELAYER_STAGE=%s" % (name, stage)); continue
    seen.add(stage)
    if "Command" in cd:
        bad.append("%s: configured by environment only" % name)
    if env.get("DELAYER_PREFIX") != "p":
        bad.append("%s: DELAYER_PREFIX is not the Prefix" % name)
    count = cfn.resolve(p["DesiredCount"], P, C)
    regs = [x["RegistryArn"]["Fn::GetAtt"][0] for x in p.get("ServiceRegistries", [])]
    for side in ("IN", "OUT"):
        for e in (env.get("DELAYER_" + side) or "").split(","):
            if not e:
                continue
            m = re.fullmatch(r"@tcp://0\.0\.0\.0:(\d+)", e)
            if m:
                port = int(m.group(1))
                if str(count) != "1": bad.append("%s binds but runs %s tasks" % (name, count))
                if len(regs) != 1: bad.append("%s binds but has no discovery name" % name)
                if not ingress["FromPort"] <= port <= ingress["ToPort"]: bad.append("%s: port %d not admitted" % (name, port))
                if {"ContainerPort": port, "Protocol": "tcp"} not in cd.get("PortMappings", []): bad.append("%s: no PortMapping %d" % (name, port))
                for reg in regs:
                    binds[(res[reg]["Properties"]["Name"], side)] = port
                continue
            m = re.fullmatch(r">tcp://([a-z0-9-]+)\.p\.delayer\.internal:(\d+)", e)
            if not m:
                bad.append("%s: endpoint %r" % (name, e)); continue
            links.append((name, side, m.group(1), int(m.group(2))))
ns = cfn.resolve(res["Namespace"]["Properties"]["Name"], P, C)
if ns != "p.delayer.internal":
    bad.append("namespace %s" % ns)
for name, side, peer, port in links:
    other = "OUT" if side == "IN" else "IN"
    if binds.get((peer, other)) != port:
        bad.append("%s: %s connects to %s:%d where no %s binds" % (name, side, peer, port, other))
for st in stages:
    if st not in seen:
        bad.append("stage %s has no service" % st)
print("\n".join(bad) if bad else "ok %d links" % len(links))
EOF
  )
  assertEquals "template wiring" "ok 5 links" "$out"
}

# The template's tables/queues against what `delayer init` makes.
test_template_tables_and_queues_are_what_init_creates() {
  local pfx out
  stack_pfx || return
  out=$("$BIN/delayer" --prefix "$pfx" init 2>&1) || { fail "delayer init: $out"; return; }
  {
    "$BIN/aws-call" dynamodb DescribeTable "{\"TableName\":\"$pfx-schedules\"}" && echo &&
      "$BIN/aws-call" dynamodb DescribeTable "{\"TableName\":\"$pfx-meta\"}" && echo &&
      "$BIN/aws-call" dynamodb DescribeTimeToLive "{\"TableName\":\"$pfx-schedules\"}" && echo &&
      for q in delay dead; do
        url=$("$BIN/aws-call" sqs GetQueueUrl "{\"QueueName\":\"$pfx-$q\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["QueueUrl"])') &&
          "$BIN/aws-call" sqs GetQueueAttributes "{\"QueueUrl\":\"$url\",\"AttributeNames\":[\"All\"]}" && echo
      done
  } >"$W/live.json" 2>"$W/live.err" || { fail "describe: $(cat "$W/live.err")"; return; }
  out=$(PYTHONPATH="$W" python3 - "$REPO" "$W/live.json" "$pfx" 2>&1 <<'EOF'
import json, sys, cfn
repo, live, pfx = sys.argv[1:4]
docs = [json.loads(l) for l in open(live) if l.strip()]
sched, meta, ttl, delay, dead = docs
t = cfn.load(repo + "/deploy/cloudformation.yaml")["Resources"]
P = {"Prefix": pfx}
bad = []
def table(cfnt, live):
    p = cfn.resolve(cfnt["Properties"], P, {})
    lt = live["Table"]
    if p["TableName"] != lt["TableName"]: bad.append("name %s != %s" % (p["TableName"], lt["TableName"]))
    if p["KeySchema"] != lt["KeySchema"]: bad.append("%s key schema %s != %s" % (lt["TableName"], p["KeySchema"], lt["KeySchema"]))
    ad = lambda l: sorted((a["AttributeName"], a["AttributeType"]) for a in l)
    if ad(p["AttributeDefinitions"]) != ad(lt["AttributeDefinitions"]): bad.append("%s attribute definitions" % lt["TableName"])
    if p.get("BillingMode") != lt.get("BillingModeSummary", {}).get("BillingMode"): bad.append("%s billing mode" % lt["TableName"])
    g = lambda l: sorted((x["IndexName"], json.dumps(x["KeySchema"]), x["Projection"]["ProjectionType"],
                          sorted(x["Projection"].get("NonKeyAttributes", []))) for x in l)
    if g(p.get("GlobalSecondaryIndexes", [])) != g(lt.get("GlobalSecondaryIndexes", [])):
        bad.append("%s indexes: template %s, init %s" % (lt["TableName"], g(p.get("GlobalSecondaryIndexes", [])), g(lt.get("GlobalSecondaryIndexes", []))))
table(t["SchedulesTable"], sched)
table(t["MetaTable"], meta)
spec = t["SchedulesTable"]["Properties"]["TimeToLiveSpecification"]
lt = ttl["TimeToLiveDescription"]
if not spec["Enabled"] or spec["AttributeName"] != lt.get("AttributeName") or lt.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
    bad.append("TTL: template %s, init %s" % (spec, lt))
for name, live in (("DelayQueue", delay), ("DeadLetterQueue", dead)):
    p, a = t[name]["Properties"], live["Attributes"]
    for k in ("VisibilityTimeout", "MessageRetentionPeriod"):
        if k in p or name == "DelayQueue":
            if str(p.get(k)) != a.get(k): bad.append("%s %s: template %s, init %s" % (name, k, p.get(k), a.get(k)))
    if "RedrivePolicy" in p or "RedrivePolicy" in a:
        lr = json.loads(a.get("RedrivePolicy", "{}"))
        if int(p["RedrivePolicy"]["maxReceiveCount"]) != int(lr.get("maxReceiveCount", -1)):
            bad.append("maxReceiveCount: template %s, init %s" % (p["RedrivePolicy"]["maxReceiveCount"], lr.get("maxReceiveCount")))
        if not lr.get("deadLetterTargetArn", "").endswith(":%s-dead" % pfx):
            bad.append("redrive target %s" % lr.get("deadLetterTargetArn"))
        if p["RedrivePolicy"]["deadLetterTargetArn"] != {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}:
            bad.append("template redrive target is not the dead-letter queue")
print("\n".join(bad) if bad else "ok")
EOF
  )
  assertEquals "template vs init" "ok" "$out"
}

# Resources made to the template's description are accepted by init.
test_init_accepts_resources_made_by_the_template() {
  local pfx out
  stack_pfx || return
  out=$(PYTHONPATH="$W" python3 - "$REPO" "$pfx" "$BIN/aws-call" 2>&1 <<'EOF'
import json, subprocess, sys, cfn
repo, pfx, call = sys.argv[1:4]
t = cfn.load(repo + "/deploy/cloudformation.yaml")["Resources"]
P = {"Prefix": pfx}
def aws(*a):
    return subprocess.run([call] + list(a), check=True, capture_output=True, text=True).stdout
for name in ("SchedulesTable", "MetaTable"):
    p = cfn.resolve(t[name]["Properties"], P, {})
    req = {k: p[k] for k in ("TableName", "BillingMode", "AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes") if k in p}
    aws("dynamodb", "CreateTable", json.dumps(req))
    if "TimeToLiveSpecification" in p:
        aws("dynamodb", "UpdateTimeToLive", json.dumps({"TableName": p["TableName"], "TimeToLiveSpecification": p["TimeToLiveSpecification"]}))
arn = None
for name in ("DeadLetterQueue", "DelayQueue"):
    p = cfn.resolve(t[name]["Properties"], P, {})
    attrs = {k: str(p[k]) for k in ("VisibilityTimeout", "MessageRetentionPeriod") if k in p}
    if "RedrivePolicy" in p:
        attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(p["RedrivePolicy"]["maxReceiveCount"])})
    url = json.loads(aws("sqs", "CreateQueue", json.dumps({"QueueName": p["QueueName"], "Attributes": attrs})))["QueueUrl"]
    arn = json.loads(aws("sqs", "GetQueueAttributes", json.dumps({"QueueUrl": url, "AttributeNames": ["QueueArn"]})))["Attributes"]["QueueArn"]
aws("sns", "CreateTopic", "Name=" + cfn.resolve(t["EventsTopic"]["Properties"]["TopicName"], P, {}))
print("ok")
EOF
  ) || { fail "creating the template's resources: $out"; return; }
  out=$("$BIN/delayer" --prefix "$pfx" init 2>&1)
  assertEquals "init exit status: $out" 0 $?
  for line in "exists table $pfx-schedules" "exists table $pfx-meta" "exists ttl $pfx-schedules.expires" \
    "exists queue $pfx-dead" "exists queue $pfx-delay"; do
    assertContains "init output" "$out" "$line"
  done
}

# ======================================================================
# IAM

test_doc_policies_are_the_template_policies() {
  local out
  out=$(PYTHONPATH="$W" python3 - "$REPO" 2>&1 <<'EOF'
import json, re, sys, cfn
repo = sys.argv[1]
t = cfn.load(repo + "/deploy/cloudformation.yaml")
P = {k: "${%s}" % k for k in ("AWS::Partition", "AWS::Region", "AWS::AccountId", "Prefix")}
P["ExtraTopicArns"] = ""
tpl = cfn.policies(t, P, {"HasExtraTopics": False, "Run": False})
doc = open(repo + "/docs/deploy-aws.md").read()
blocks = dict(re.findall(r"<!-- iam:(\w+) -->\n```json\n(.*?)\n```", doc, re.S))
bad = []
for name, pol in tpl.items():
    if name not in blocks:
        bad.append("%s: not in the document" % name)
    elif json.loads(blocks[name]) != pol:
        bad.append("%s: the document's policy differs from the template's" % name)
for name in set(blocks) - set(tpl):
    bad.append("%s: in the document only" % name)
if set(tpl) != set(cfn.ROLE.values()):
    bad.append("roles %s, components %s" % (sorted(tpl), sorted(cfn.ROLE.values())))
print("\n".join(bad) if bad else "ok %d" % len(tpl))
EOF
  )
  assertEquals "doc vs template" "ok 8" "$out"
}

test_policies_grant_exactly_what_the_code_calls() {
  local out
  out=$(PYTHONPATH="$W" python3 - "$REPO" 2>&1 <<'EOF'
import sys, cfn, ops
repo = sys.argv[1]
t = cfn.load(repo + "/deploy/cloudformation.yaml")
pols = cfn.policies(t, {"Prefix": "p"}, {"HasExtraTopics": False, "Run": False})
def granted(*roles):
    return {a for r in roles for st in pols[r]["Statement"] for a in cfn.listify(st["Action"])}
g = ops.Graph(repo)
split = g.cli_split()
# tool (and excluded subcommands) -> the roles it runs with
comps = [("ddb-scan-due", (), ["ScanDueRole"]), ("sqs-push", (), ["SqsPushRole"]),
         ("sqs-drain", (), ["SqsDrainRole", "SqsDrainDeadRole"]), ("sns-publish", (), ["SnsPublishRole"]),
         ("state-update", (), ["StateUpdateRole"]), ("delayer", split["cli"], ["CliPolicy"]),
         ("delayer", split["init"], ["InitRole"])]
bad, covered = [], set()
for tool, excl, roles in comps:
    reach, _ = g.ops(tool, excl)
    need = {cfn.action(o) for o in reach}
    have = granted(*roles)
    covered |= reach
    for a in sorted(need - have):
        op = next(o for o in reach if cfn.action(o) == a)
        bad.append("%s (%s) calls %s but %s does not allow %s" % (tool, "/".join(roles), op, "+".join(roles), a)
                   + "\n    " + g.path(tool, op, excl))
    for a in sorted(have - need):
        bad.append("%s allows %s, which %s never calls" % ("+".join(roles), a, tool))
    if not reach:
        bad.append("%s: no AWS operation found (analysis broken?)" % tool)
# sqs-drain's two roles: the delay queue needs no delete, the dead one does.
if "sqs:DeleteMessage" in granted("SqsDrainRole"):
    bad.append("SqsDrainRole may delete from the delay queue (only sns-publish does)")
print("\n".join(bad) if bad else "ok " + " ".join(sorted(covered)))
EOF
  )
  case $out in
    ok\ *) assertContains "analysis found the scanner's index Query" "$out" " Query " ;;
    *) fail "policy vs code: $out" ;;
  esac
}

# ======================================================================
# the entrypoint

# ep_stub DIR: DIR/ep is the entrypoint running tools from DIR, where every
# tool is a stub printing its arguments one per line.
ep_stub() {
  local d=$1 t
  mkdir -p "$d"
  printf '#!/bin/sh\nfor a in "$@"; do printf "%%s\\n" "$a"; done\n' >"$d/stub"
  chmod 755 "$d/stub"
  for t in $STAGES delayer delayer-keygen; do ln -sf stub "$d/$t"; done
  sed "s|^BIN=/usr/local/bin\$|BIN=$d|" deploy/entrypoint.sh >"$d/ep"
  grep -q "^BIN=$d\$" "$d/ep" || fail "entrypoint: no BIN=/usr/local/bin line to point at the stubs"
}

test_entrypoint_maps_every_stage_option_from_the_environment() {
  local d=$W/ep s opts o var val out missing="" extra=""
  ep_stub "$d"
  # Options a stage reads from the environment itself, or that only the
  # supervisor uses: the entrypoint must not generate them.
  local self_read="prefix window log-level no-events ready-fd help version"
  for s in $STAGES; do
    opts=$("$BIN/$s" --help | sed -n 's/^  --\([a-z-]*\).*/\1/p')
    [ -n "$opts" ] || { fail "$s --help lists no options"; continue; }
    for o in $opts; do
      case " $self_read " in *" $o "*) continue ;; esac
      var=DELAYER_$(printf '%s' "$o" | tr 'a-z-' 'A-Z_')
      if "$BIN/$s" --help | grep -qE "^  --$o [A-Z]"; then val="v-$o"; else val=1; fi
      out=$(env -i PATH=/usr/bin:/bin DELAYER_STAGE="$s" "$var=$val" dash "$d/ep" 2>&1)
      if [ "$val" = 1 ]; then
        [ "$out" = "--$o" ] || missing="$missing $s:$var"
      else
        [ "$out" = "$(printf -- '--%s\n%s' "$o" "$val")" ] || missing="$missing $s:$var"
      fi
    done
  done
  assertEquals "stage options the entrypoint does not map" "" "$missing"
  # The other way: with every variable the entrypoint knows set, each stage
  # still accepts its command line (an option it lacks would be exit 100).
  local all=() v
  # (values that pass the option parser: endpoints, --hwm and --metrics are
  # checked while parsing, the rest later)
  for v in $(grep -oE 'DELAYER_[A-Z_]+:--[a-z-]+' deploy/entrypoint.sh | cut -d: -f1 | sort -u); do
    case $v in
      DELAYER_ONCE) all+=("$v=1") ;;
      DELAYER_IN | DELAYER_OUT) all+=("$v=-") ;;
      DELAYER_HWM) all+=("$v=1000") ;;
      DELAYER_METRICS) all+=("$v=127.0.0.1:9100") ;;
      DELAYER_CURVE_*) ;;
      *) all+=("$v=1") ;;
    esac
  done
  for s in $STAGES; do
    out=$(env -i PATH=/usr/bin:/bin "${all[@]}" DELAYER_STAGE="$s" dash "$d/ep" | tr '\n' ' ')
    # the stub shows the command line; the real stage must parse it (--help
    # stops after parsing, before any value is used)
    sed "s|^BIN=/usr/local/bin\$|BIN=$BIN|" deploy/entrypoint.sh >"$W/ep-real"
    if ! env -i PATH=/usr/bin:/bin "${all[@]}" DELAYER_STAGE="$s" dash "$W/ep-real" --help >/dev/null 2>"$W/ep.err"; then
      extra="$extra $s:[$out]:$(head -c 200 "$W/ep.err")"
    fi
  done
  assertEquals "options generated that a stage does not have" "" "$extra"
  # The self-read variables really are read by the code.
  for v in DELAYER_PREFIX DELAYER_WINDOW DELAYER_LOG_LEVEL DELAYER_EVENTS; do
    grep -q "\"$v\"" lib/*.c tools/*.c || fail "$v is read by no tool"
  done
}

test_entrypoint_tool_choice_flags_and_errors() {
  local d=$W/ep out rc
  ep_stub "$d"
  out=$(env -i dash "$d/ep" delayer init --topic "a b" | tr '\n' '|')
  assertEquals "first argument as the tool" "init|--topic|a b|" "$out"
  out=$(env -i DELAYER_STAGE=ddb-scan-due DELAYER_OUT='@tcp://0.0.0.0:7001' DELAYER_ONCE=1 DELAYER_TICK= dash "$d/ep" ddb-scan-due --help | tr '\n' '|')
  assertEquals "stage from DELAYER_STAGE, same first argument dropped, empty variable ignored, arguments last" \
    "--out|@tcp://0.0.0.0:7001|--once|--help|" "$out"
  out=$(env -i DELAYER_STAGE=ddb-scan-due DELAYER_ONCE=0 dash "$d/ep" | tr '\n' '|')
  assertEquals "flag 0 = off" "" "$out"
  env -i DELAYER_STAGE=ddb-scan-due DELAYER_ONCE=yes dash "$d/ep" >/dev/null 2>&1
  assertEquals "flag not 0/1" 100 $?
  env -i dash "$d/ep" >/dev/null 2>&1
  assertEquals "no tool" 100 $?
  env -i dash "$d/ep" rm -rf / >/dev/null 2>&1
  assertEquals "unknown tool" 100 $?
  env -i DELAYER_STAGE=sqs-push DELAYER_CURVE_SECRET=/x DELAYER_CURVE_SECRET_Z85=abc dash "$d/ep" >/dev/null 2>&1
  assertEquals "a key given twice" 100 $?
  # keys as text: private directory, secret 0600, allow-list one file per key;
  # Z85 characters (* ? [ ] $) arrive verbatim
  mkdir -p "$W/keys"
  out=$(env -i PATH=/usr/bin:/bin DELAYER_KEY_DIR="$W/keys" DELAYER_STAGE=state-update \
    DELAYER_CURVE_SECRET_Z85='s3cr*t?[x]$HOME' DELAYER_CURVE_ALLOW_Z85='k1*, k2?	k3' dash "$d/ep" | tr '\n' ' ')
  rc=$?
  assertEquals "keys as text: exit" 0 $rc
  set -- $out
  assertEquals "secret option" "--curve-secret" "$1"
  assertEquals "secret file mode" 600 "$(stat -c %a "$2")"
  assertEquals "secret verbatim" 's3cr*t?[x]$HOME' "$(cat "$2")"
  assertEquals "key directory mode" 700 "$(stat -c %a "$(dirname "$2")")"
  assertEquals "allow option" "--curve-allow" "$3"
  assertEquals "allow keys" 'k1*|k2?|k3' "$(cat "$4"/client-1.pub "$4"/client-2.pub "$4"/client-3.pub | tr '\n' '|' | sed 's/|$//')"
  if command -v shellcheck >/dev/null; then
    out=$(shellcheck -s sh deploy/entrypoint.sh 2>&1)
    assertEquals "shellcheck" "" "$out"
  fi
}

# ======================================================================
# the Dockerfile against what the build and the binaries really need

test_dockerfile_packages_cover_headers_libraries_and_runtime() {
  command -v dpkg-query >/dev/null || { echo "skipped: no dpkg-query" >&2; startSkipping; return; }
  release_bin || return
  local out
  out=$(python3 - "$REPO" "$RBIN" 2>&1 <<'EOF'
import glob, os, re, subprocess, sys
repo, bindir = sys.argv[1:3]
df = open(os.path.join(repo, "Dockerfile")).read()
bad = []
stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", df, re.M)
if [s[0] for s in stages] != ["debian:12", "debian:12-slim"]:
    bad.append("stages %s (want build on debian:12, runtime on debian:12-slim)" % stages)
parts = re.split(r"^FROM .*$", df, flags=re.M)[1:]
def pkgs(part):
    m = re.search(r"apt-get install[^\n]*?--no-install-recommends((?:\s*\\\n)?(?:[ \t]+[a-z0-9.+-]+)+)", part)
    return set(m.group(1).replace("\\", " ").split()) if m else set()
build, runtime = pkgs(parts[0]), pkgs(parts[1])
if not re.search(r"^COPY --from=%s /src/bin/ /usr/local/bin/$" % stages[0][1], parts[1], re.M):
    bad.append("runtime does not copy the built binaries to /usr/local/bin")
if not re.search(r"^COPY deploy/entrypoint.sh /usr/local/bin/delayer-entrypoint$", parts[1], re.M) or \
   'ENTRYPOINT ["/usr/local/bin/delayer-entrypoint"]' not in parts[1]:
    bad.append("entrypoint not installed/used as /usr/local/bin/delayer-entrypoint")
if not re.search(r"^USER 10001:10001$", parts[1], re.M) or "--uid 10001" not in parts[1]:
    bad.append("runtime does not run as uid 10001")
if "ca-certificates" not in runtime:
    bad.append("no ca-certificates in the runtime image")

def sh(*a):
    return subprocess.run(a, capture_output=True, text=True).stdout
def owner(path):
    for p in (path, os.path.realpath(path), "/usr" + path, os.path.realpath(path).replace("/usr/", "/", 1)):
        out = sh("dpkg-query", "-S", p)
        if out:
            return out.split(":")[0].split(",")[0].strip()
    return None
def closure(names):
    seen, todo = set(), list(names)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        dep = sh("dpkg-query", "-W", "-f=${Depends},${Pre-Depends}", n)
        for alt in dep.split(","):
            for d in alt.split("|"):
                d = d.strip().split(" ")[0].split(":")[0]
                if d:
                    todo.append(d)
    return seen
# what debian:12-slim holds: the Essential and required packages, with
# their dependencies
base = set()
for l in sh("dpkg-query", "-W", "-f=${Package} ${Essential} ${Priority}\n").split("\n"):
    f = l.split()
    if len(f) == 3 and (f[1] == "yes" or f[2] == "required"):
        base.add(f[0])
required = closure(base)
bclose = closure(build | required)
# every header the sources include
srcs = glob.glob(os.path.join(repo, "lib", "*.c")) + glob.glob(os.path.join(repo, "tools", "*.c"))
deps = sh("cc", "-std=c11", "-D_GNU_SOURCE", "-I" + os.path.join(repo, "lib"), "-M", *srcs)
hdrs = sorted({h for h in deps.replace("\\\n", " ").split() if h.startswith("/usr/")})
for h in hdrs:
    o = owner(h)
    if o not in bclose:
        bad.append("header %s (package %s) is not provided by the build stage" % (h, o))
# every library the link names (Makefile LDLIBS)
mk = open(os.path.join(repo, "Makefile")).read()
for lib in re.findall(r"-l(\w+)", " ".join(re.findall(r"^LDLIBS\s*\+?=(.*)$", mk, re.M))):
    path = sh("cc", "-print-file-name=lib%s.so" % lib).strip()
    o = owner(path) if path.startswith("/") else None
    if o not in bclose:
        bad.append("-l%s (%s, package %s) is not provided by the build stage" % (lib, path, o))
# every shared library the binaries need at run time
rclose = runtime | required
tools = [f for f in glob.glob(os.path.join(bindir, "*")) if os.access(f, os.X_OK)]
libs = {}
for b in tools:
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", sh("readelf", "-d", b))
    where = dict(re.findall(r"^\s*(\S+) => (\S+)", sh("ldd", b), re.M))
    for n in needed:
        libs[n] = where.get(n)
for n, path in sorted(libs.items()):
    o = owner(path) if path else None
    if o not in rclose:
        bad.append("%s (%s, package %s) is not installed by the runtime stage" % (n, path, o))
print("\n".join(bad) if bad else "ok %d headers, %d libraries" % (len(hdrs), len(libs)))
EOF
  )
  case $out in
    ok\ *) assertTrue true ;;
    *) fail "Dockerfile: $out" ;;
  esac
}

# The build stage's own commands, on only the files it copies, build every tool.
test_dockerfile_build_stage_builds_every_tool() {
  local d=$W/build-stage out
  rm -rf "$d" && mkdir -p "$d/src" || return
  out=$(python3 - "$REPO" "$d" 2>&1 <<'EOF'
import os, re, shutil, subprocess, sys
repo, d = sys.argv[1:3]
df = open(os.path.join(repo, "Dockerfile")).read().replace("\\\n", " ")
build = re.split(r"^FROM .*$", df, flags=re.M)[1]
assert re.search(r"^WORKDIR /src$", build, re.M), "no WORKDIR /src"
for src, dst in re.findall(r"^COPY (\S+) (\S+)$", build, re.M):
    s, t = os.path.join(repo, src), os.path.join(d, "src", dst)
    if os.path.isdir(s):
        shutil.copytree(s, t, dirs_exist_ok=True)
    else:
        os.makedirs(os.path.dirname(t) or ".", exist_ok=True)
        shutil.copy(s, t if not dst.endswith("/") else os.path.join(t, os.path.basename(s)))
runs = [r for r in re.findall(r"^RUN (.*)$", build, re.M) if "apt-get" not in r]
assert len(runs) == 1, runs
r = subprocess.run(["sh", "-c", runs[0]], cwd=os.path.join(d, "src"), capture_output=True, text=True)
if r.returncode:
    print("build failed: " + (r.stderr or r.stdout)[-800:])
    sys.exit()
want = sorted(f[:-2] for f in os.listdir(os.path.join(repo, "tools")) if f.endswith(".c"))
have = sorted(os.listdir(os.path.join(d, "src", "bin")))
print("ok" if want == have else "built %s, tools %s" % (have, want))
EOF
  )
  assertEquals "build stage" "ok" "$out"
  rm -rf "$d"
}

# ======================================================================
# the runtime layout, in a chroot

# make_root: $W/root laid out like the runtime image. Sets ROOT.
make_root() {
  ROOT=$W/root
  [ -f "$ROOT/.done" ] && return 0
  local f lib t
  mkdir -p "$ROOT"/usr/bin "$ROOT"/usr/lib "$ROOT"/usr/lib64 "$ROOT"/usr/local/bin "$ROOT"/etc/ssl/certs \
    "$ROOT"/dev "$ROOT"/tmp "$ROOT"/run || return 1
  ln -s usr/bin "$ROOT/bin" && ln -s usr/lib "$ROOT/lib" && ln -s usr/lib64 "$ROOT/lib64" || return 1
  for f in "$RBIN"/*; do
    [ -x "$f" ] && install -m 0755 "$f" "$ROOT/usr/local/bin/" || return 1
  done
  install -m 0755 deploy/entrypoint.sh "$ROOT/usr/local/bin/delayer-entrypoint" || return 1
  # /bin/sh and what the entrypoint runs besides builtins (as in debian-slim)
  install -m 0755 /bin/dash "$ROOT/usr/bin/dash" && ln -s dash "$ROOT/usr/bin/sh" || return 1
  for t in mktemp chmod mkdir; do install -m 0755 "$(command -v $t)" "$ROOT/usr/bin/$t" || return 1; done
  # the shared libraries ldd lists, at their own paths
  for f in "$ROOT"/usr/local/bin/* "$ROOT"/usr/bin/*; do
    file -L "$f" 2>/dev/null | grep -q ELF || continue
    for lib in $(ldd "$f" | grep -oE '/[^ ]+'); do
      [ -e "$ROOT$lib" ] && continue
      mkdir -p "$ROOT$(dirname "$(readlink -f "$lib")")" "$ROOT$(dirname "$lib")" &&
        cp -L "$lib" "$ROOT$(readlink -f "$lib")" || return 1
      [ "$(readlink -f "$lib")" = "$lib" ] || [ -e "$ROOT$lib" ] || ln -s "$(readlink -f "$lib")" "$ROOT$lib" || return 1
    done
  done
  printf 'root:x:0:0:root:/root:/bin/sh\ndelayer:x:10001:10001::/nonexistent:/usr/sbin/nologin\n' >"$ROOT/etc/passwd"
  printf 'root:x:0:\ndelayer:x:10001:\n' >"$ROOT/etc/group"
  printf 'hosts: files\n' >"$ROOT/etc/nsswitch.conf"
  printf '127.0.0.1 localhost\n' >"$ROOT/etc/hosts"
  cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt" || return 1
  mknod -m 666 "$ROOT/dev/null" c 1 3 && mknod -m 666 "$ROOT/dev/urandom" c 1 9 || return 1
  # as with a read-only root file system: only /dev/shm (a tmpfs in a
  # container) is writable by uid 10001
  mkdir -m 1777 "$ROOT/dev/shm" && chmod 0755 "$ROOT/tmp" || return 1
  chmod -R a+rX "$ROOT" && touch "$ROOT/.done"
}

need_root() {
  release_bin || return 1
  CHROOT=$(command -v chroot)
  if [ "$(id -u)" != 0 ] || [ -z "$CHROOT" ]; then
    echo "skipped: chroot layout checks need root" >&2
    startSkipping
    return 1
  fi
  make_root || { fail "could not build the chroot layout"; return 1; }
}

# in_root VAR=VALUE... -- ARGS...: the entrypoint in the chroot as uid 10001,
# with only the given environment (and PATH, as the image sets it). It execs:
# call it in $(...), ( ... ) or with & (then $! is the tool's own PID).
in_root() {
  local envs=(PATH=/usr/local/bin:/usr/bin:/bin)
  while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  exec env -i "${envs[@]}" "$CHROOT" --userspec=10001:10001 "$ROOT" /usr/local/bin/delayer-entrypoint "$@"
}

test_runtime_layout_every_tool_starts_as_uid_10001() {
  need_root || return
  local s out v
  v=$("$RBIN/delayer" --version | awk '{print $2}')
  for s in $STAGES; do
    out=$(in_root DELAYER_STAGE="$s" -- --version 2>&1)
    assertEquals "$s --version through the entrypoint" "$s (delayer) $v" "$out"
    out=$(in_root -- "$s" --help 2>&1)
    assertContains "$s --help" "$out" "Usage: $s"
  done
  out=$(in_root -- delayer --version 2>&1)
  assertEquals "delayer --version" "delayer $v" "$out"
  (in_root -- sh -c true >/dev/null 2>&1)
  assertEquals "only delayer's tools run through the entrypoint" 100 $?
  (in_root -- delayer-keygen /dev/shm/k.key /dev/shm/k.pub >/dev/null 2>&1)
  assertEquals "delayer-keygen in the chroot" 0 $?
  assertEquals "tools run as uid 10001" "10001 600" "$(stat -c '%u %a' "$ROOT/dev/shm/k.key" 2>&1)"
  rm -f "$ROOT/dev/shm/k.key" "$ROOT/dev/shm/k.pub"
}

# z85 FILE: the key line of a delayer-keygen file.
z85() { grep -v '^#' "$1" | head -n 1; }

test_runtime_layout_runs_the_pipeline_over_tls_and_curve_with_iam_recorded() {
  need_root || return
  local pfx k p ports out rc i sa sc st
  stack_pfx || return
  # TLS: a throw-away CA in the chroot's bundle, as compose.yaml does
  (cd "$W" && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout ca.key -out ca.pem &&
    printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >ext.cnf &&
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout srv.key -out srv.csr &&
    openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out srv.pem) \
    >"$W/openssl.log" 2>&1 || { fail "openssl: $(tail -3 "$W/openssl.log")"; return; }
  cat /etc/ssl/certs/ca-certificates.crt "$W/ca.pem" >"$ROOT/etc/ssl/certs/ca-certificates.crt"
  # the recording proxy, HTTPS, one port per component
  : >"$W/calls.log"
  python3 "$W/proxy.py" "$AWS_ENDPOINT_URL_DYNAMODB" "$AWS_ENDPOINT_URL_SQS" "$W/calls.log" "$W/ports" \
    "$W/srv.pem" "$W/srv.key" init cli ddb-scan-due sqs-push sqs-drain sqs-drain-dead sns-publish state-update creds \
    2>"$W/proxy.err" &
  PIDS+=($!)
  for i in $(seq 100); do [ -f "$W/ports" ] && break; sleep 0.1; done
  [ -f "$W/ports" ] || { fail "proxy did not start: $(cat "$W/proxy.err")"; return; }
  # CURVE: one server pair for the three binders, one pair per connector
  for k in server push publish dead; do
    "$BIN/delayer-keygen" "$W/$k.key" "$W/$k.pub" >/dev/null || { fail "keygen"; return; }
  done
  # pipe names: state-update's points nowhere first, and is fixed once all run
  local P1 P2 P3
  P1=$(free_port) && P2=$(free_port) && P3=$(free_port) || { fail "no ports"; return; }
  printf '127.0.0.1 localhost\n127.0.0.1 ddb-scan-due.pipe.test sqs-drain.pipe.test\n127.0.0.2 state-update.pipe.test\n' \
    >"$ROOT/etc/hosts"
  # run LABEL VAR=VALUE... -- ARGS: a component in the chroot, through its
  # proxy port, with credentials from the container credentials endpoint
  # (as ECS and EKS Pod Identity give them: no keys in the environment)
  local CREDS
  CREDS=$(awk '$1 == "creds" {print $2}' "$W/ports")
  run() {
    local label=$1 port
    shift
    port=$(awk -v l="$label" '$1 == l {print $2}' "$W/ports")
    in_root AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
      AWS_CONTAINER_CREDENTIALS_FULL_URI="https://localhost:$CREDS/v1/credentials" \
      AWS_CONTAINER_AUTHORIZATION_TOKEN=pod-identity-token \
      AWS_ENDPOINT_URL="https://localhost:$port" \
      DELAYER_PREFIX="$pfx" DELAYER_LOG_LEVEL=info "$@"
  }
  out=$(run init DELAYER_WINDOW=3s -- delayer init --topic t --topic gone 2>&1)
  assertEquals "init in the chroot, over TLS: $out" 0 $?
  local SRV PUSH PUB DEAD
  SRV=$(z85 "$W/server.key") PUSH=$(z85 "$W/push.key") PUB=$(z85 "$W/publish.key") DEAD=$(z85 "$W/dead.key")
  local SPUB ALLOW_SU
  SPUB=$(z85 "$W/server.pub")
  ALLOW_SU="$(z85 "$W/push.pub"),$(z85 "$W/publish.pub") $(z85 "$W/dead.pub")"
  run state-update DELAYER_STAGE=state-update DELAYER_IN="@tcp://127.0.0.1:$P3" \
    DELAYER_CURVE_SECRET_Z85="$SRV" DELAYER_CURVE_ALLOW_Z85="$ALLOW_SU" -- 2>"$W/su.log" &
  local S_SU=$!
  run ddb-scan-due DELAYER_STAGE=ddb-scan-due DELAYER_OUT="@tcp://127.0.0.1:$P1" DELAYER_TICK=200ms \
    DELAYER_CURVE_SECRET_Z85="$SRV" DELAYER_CURVE_ALLOW_Z85="$(z85 "$W/push.pub")" -- 2>"$W/scan.log" &
  local S_SCAN=$!
  run sqs-push DELAYER_STAGE=sqs-push DELAYER_IN=">tcp://ddb-scan-due.pipe.test:$P1" \
    DELAYER_OUT=">tcp://state-update.pipe.test:$P3" \
    DELAYER_CURVE_SECRET_Z85="$PUSH" DELAYER_CURVE_SERVER_KEY_Z85="$SPUB" -- 2>"$W/push.log" &
  local S_PUSH=$!
  run sqs-drain DELAYER_STAGE=sqs-drain DELAYER_QUEUE=delay DELAYER_OUT="@tcp://127.0.0.1:$P2" \
    DELAYER_CURVE_SECRET_Z85="$SRV" DELAYER_CURVE_ALLOW_Z85="$(z85 "$W/publish.pub")" -- 2>"$W/drain.log" &
  local S_DRAIN=$!
  run sns-publish DELAYER_STAGE=sns-publish DELAYER_IN=">tcp://sqs-drain.pipe.test:$P2" \
    DELAYER_OUT=">tcp://state-update.pipe.test:$P3" DELAYER_RETRY_BACKOFF=100ms \
    DELAYER_CURVE_SECRET_Z85="$PUB" DELAYER_CURVE_SERVER_KEY_Z85="$SPUB" -- 2>"$W/pub.log" &
  local S_PUB=$!
  run sqs-drain-dead DELAYER_STAGE=sqs-drain DELAYER_QUEUE=dead DELAYER_WAIT=1 \
    DELAYER_OUT=">tcp://state-update.pipe.test:$P3" \
    DELAYER_CURVE_SECRET_Z85="$DEAD" DELAYER_CURVE_SERVER_KEY_Z85="$SPUB" -- 2>"$W/dead.log" &
  local S_DEAD=$!
  local STAGE_PIDS=($S_SU $S_SCAN $S_PUSH $S_DRAIN $S_PUB $S_DEAD)
  PIDS+=("${STAGE_PIDS[@]}")
  for i in $(seq 100); do
    [ "$(cat "$W"/su.log "$W"/scan.log "$W"/push.log "$W"/drain.log "$W"/pub.log "$W"/dead.log 2>/dev/null | grep -c 'msg=ready')" = 6 ] && break
    sleep 0.1
  done
  # CURVE from the _Z85 variables: every stage runs with key files
  for p in "${STAGE_PIDS[@]}"; do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- '--curve-secret /dev/shm/delayer-keys\.' ||
      fail "pid $p runs without CURVE: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>&1)"
  done
  sleep 1
  # the name state-update.pipe.test now reaches the binder: connectors must
  # resolve it again by themselves
  printf '127.0.0.1 localhost\n127.0.0.1 ddb-scan-due.pipe.test sqs-drain.pipe.test state-update.pipe.test\n' \
    >"$ROOT/etc/hosts"
  # schedules: A through the table and the scanner, B fast track, C to a
  # topic deleted before its time (-> dead letter -> FAILED), E by ARN
  local A B C E GARN TARN
  run cli -- delayer watch --topic t --count 2 --timeout 60s >"$W/watch.out" 2>"$W/watch.err" &
  local S_WATCH=$!
  PIDS+=($S_WATCH)
  A=$(run cli DELAYER_WINDOW=3s -- delayer schedule --in 8s --topic t --payload a 2>&1) || fail "schedule A: $A"
  B=$(run cli DELAYER_WINDOW=3s -- delayer schedule --in 2s --topic t --payload b 2>&1) || fail "schedule B: $B"
  C=$(run cli DELAYER_WINDOW=3s -- delayer schedule --in 2s --topic gone --payload c 2>&1) || fail "schedule C: $C"
  GARN=$("$BIN/delayer" --prefix "$pfx" get "$C" | python3 -c 'import json,sys; print(json.load(sys.stdin)["topic"])')
  TARN=${GARN%-gone}-t
  "$BIN/aws-call" sns DeleteTopic "TopicArn=$GARN" >/dev/null || fail "DeleteTopic"
  E=$(run cli -- delayer schedule --in 1h --topic "$TARN" --payload e 2>&1) || fail "schedule E by ARN: $E"
  for i in $(seq 120); do
    sa=$("$BIN/delayer" --prefix "$pfx" get "$A" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null)
    sc=$("$BIN/delayer" --prefix "$pfx" get "$C" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null)
    [ "$sa" = PUBLISHED ] && [ "$sc" = FAILED ] && break
    sleep 0.5
  done
  assertEquals "A (through the scanner) published" PUBLISHED "$sa"
  assertEquals "C (topic gone) FAILED via the dead-letter queue and state-update" FAILED "$sc"
  wait "$S_WATCH"
  assertEquals "watch saw A and B: $(cat "$W/watch.err")" 0 $?
  assertEquals "watch lines" 2 "$(grep -c . "$W/watch.out")"
  # the rest of the CLI, for the recorded calls
  (run cli -- delayer list --state FAILED >/dev/null 2>&1) || fail "list"
  (run cli -- delayer retry "$C" >/dev/null 2>&1) || fail "retry"
  (run cli -- delayer cancel "$E" >/dev/null 2>&1) || fail "cancel"
  (run cli -- delayer delete "$E" >/dev/null 2>&1) || fail "delete"
  (run cli -- delayer stats >/dev/null 2>&1) || fail "stats"
  (run cli -- delayer stats --recount >/dev/null 2>&1) || fail "stats --recount"
  printf '{"in":"1h","topic":"t","payload":"x"}\n{"id":"dep-imp-1s","in":"1s","topic":"t","payload":"y"}\n' |
    (run cli -- delayer import >/dev/null 2>&1) || fail "import"
  # the pipeline publishes the 1 s one (its calls are recorded too)
  for i in $(seq 60); do
    [ "$("$BIN/delayer" --prefix "$pfx" get dep-imp-1s 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null)" = PUBLISHED ] && break
    sleep 0.5
  done
  # SIGTERM reaches each stage through the entrypoint (exec): exit 0
  for p in "${STAGE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${STAGE_PIDS[@]}"; do
    wait "$p"
    rc=$?
    assertEquals "stage pid $p stops with 0 on SIGTERM" 0 "$rc"
  done
  grep -h 'level=error' "$W"/su.log "$W"/scan.log "$W"/push.log "$W"/drain.log "$W"/pub.log "$W"/dead.log |
    grep -v 'msg="publish' | head -5 >"$W/errors"
  assertEquals "stage errors" "" "$(grep -v 'NotFound\|gone' "$W/errors")"
  # every recorded call is allowed by its component's policy
  out=$(PYTHONPATH="$W" python3 - "$REPO" "$W/calls.log" "$pfx" 2>&1 <<'EOF'
import fnmatch, json, sys, cfn
repo, log, pfx = sys.argv[1:4]
t = cfn.load(repo + "/deploy/cloudformation.yaml")
P = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "000000000000",
     "Prefix": pfx, "ExtraTopicArns": ""}
pols = cfn.policies(t, P, {"HasExtraTopics": False, "Run": False})
def allowed(role, act, arn):
    for st in pols[role]["Statement"]:
        if st["Effect"] == "Allow" and act in cfn.listify(st["Action"]) and \
           any(fnmatch.fnmatchcase(arn, r) for r in cfn.listify(st["Resource"])):
            return True
    return False
bad, n, labels, creds = set(), 0, set(), 0
for line in open(log):
    c = json.loads(line)
    if c["label"] == "creds":
        creds += 1
        if c["auth"] != "pod-identity-token":
            bad.add("credentials endpoint asked without the token: %r" % c["auth"])
        continue
    n += 1
    labels.add(c["label"])
    if c["key"] != "AKIDCONTAINERTEST":
        bad.add("%s %s signed with %r, not the container credentials" % (c["label"], c["op"], c["key"]))
    act = cfn.action(c["op"])
    if not c["arns"]:
        bad.add("%s %s: no resource recorded" % (c["label"], c["op"]))
    for arn in c["arns"]:
        if not allowed(cfn.ROLE[c["label"]], act, arn):
            bad.add("%s: %s on %s is not allowed by %s" % (c["label"], act, arn, cfn.ROLE[c["label"]]))
if creds < len(cfn.ROLE):
    bad.add("the credentials endpoint was asked %d times" % creds)
missing = set(cfn.ROLE) - labels
if missing:
    bad.add("components that made no call: %s" % sorted(missing))
print("\n".join(sorted(bad)) if bad else "ok %d calls" % n)
EOF
  )
  case $out in
    ok\ *) assertTrue true ;;
    *) fail "recorded calls: $out" ;;
  esac
}

# shellcheck source=/dev/null
. /usr/share/shunit2/shunit2
