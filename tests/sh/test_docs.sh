#!/usr/bin/env bash
# test_docs.sh: the documentation agrees with the code.
#   - every tool (tools/*.c, scripts/delayer-supervise, scripts/local-aws)
#     has a man page docs/TOOL.1; every long option its --help prints is in
#     the page's OPTIONS section, and every option the page's OPTIONS lists
#     is in --help; the same for each `delayer help SUBCOMMAND` and the
#     subcommand's subsection of delayer.1 (every subcommand of delayer.c
#     has one);
#   - each stage option's default in --help is the man page's and
#     configuration.md's;
#   - every man page renders (man -l) without groff warnings, has the
#     standard sections and the one exit-status table (0 1 2 3 100 111);
#   - every relative link in README.md and the docs written for it exists,
#     and README.md links every docs/*.md;
#   - docs/configuration.md names every environment variable the code reads
#     (getenv and the env helpers in lib/ and tools/, DELAYER_*/AWS_*/
#     LOCAL_AWS_* in scripts/);
#   - `make install DESTDIR=... PREFIX=/usr` lays out the tools, the
#     supervisor (which then finds its pipelines and tools), the man pages
#     and the documents with the right modes.
# The checks are functions that print what is missing; the self-tests run
# them on doctored copies to show that they can fail. Needs no AWS stack.
export SHUNIT_COLOR=none
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${DELAYER_BIN:-$REPO/bin}
DOCS=$REPO/docs

# ---- helpers ----

# tools with a man page: every tools/*.c, and the two operator scripts
tool_names() {
  local f
  for f in "$REPO"/tools/*.c; do f=${f##*/}; echo "${f%.c}"; done
  echo delayer-supervise
  echo local-aws
}

# help TOOL: its --help text
help_of() {
  case $1 in
    delayer-supervise | local-aws) "$REPO/scripts/$1" --help 2>&1 ;;
    *) "$BIN/$1" --help 2>&1 ;;
  esac
}

# the subcommands in delayer.c's dispatch table
delayer_subcommands() {
  grep -oE '\{"[a-z]+", cmd_[a-z]+\}' "$REPO/tools/delayer.c" | sed -E 's/^\{"([a-z]+)".*/\1/'
}

# long options in a text (stdin): --name, not inside another word
long_opts() {
  grep -oE -- '(^|[^[:alnum:]_-])--[a-z][a-z0-9-]*' | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u
}

# roff source with escapes taken out: \- -> -, font changes and \& dropped
norm() {
  sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\f(..//g' -e 's/\\&//g' -e 's/\\%//g' "$1"
}

# section PAGE NAME: the normalized lines of section .SH NAME (up to the next .SH)
section() {
  norm "$1" | awk -v want="$2" '
    /^\.SH / { s = substr($0, 5); gsub(/"/, "", s); on = (s == want); next }
    on'
}

# subsection PAGE NAME: the lines of .SS NAME (up to the next .SS or .SH)
subsection() {
  norm "$1" | awk -v want="$2" '
    /^\.S[SH] / { s = substr($0, 5); gsub(/"/, "", s); on = ($1 == ".SS" && s == want); next }
    on'
}

# tags TEXT(stdin): the tag lines of .TP items (the line after each .TP)
tags() { awk 'tp { print; tp = 0 } /^\.TP/ { tp = 1 }'; }

has_opt() { grep -qE -- "(^|[^[:alnum:]_-])$1([^[:alnum:]_-]|\$)"; }

# the lines of a help text that define options: usage lines and their
# continuations, and lines starting with an option ("  --tick DURATION ...")
def_lines() { grep -E '^[[:space:]]*([Uu]sage:|-|\[|\()'; }

# check_opts LABEL HELP_TEXT MAN_SECTION MAN_PAGE: prints one line per option
# the help defines that the man section (OPTIONS, or the subcommand's
# subsection) lacks, per option the help only mentions that the whole page
# lacks, and per option tag of the section that the help lacks. Returns 1 if
# anything was printed.
check_opts() {
  local label=$1 help=$2 man=$3 whole=$4 o bad=0
  for o in $(printf '%s\n' "$help" | def_lines | long_opts); do
    printf '%s\n' "$man" | has_opt "$o" || { echo "$label: $o is in --help but not in the man page"; bad=1; }
  done
  for o in $(printf '%s\n' "$help" | long_opts); do
    printf '%s\n' "$whole" | has_opt "$o" || { echo "$label: $o is in --help but not in the man page"; bad=1; }
  done
  for o in $(printf '%s\n' "$man" | tags | long_opts); do
    [ "$o" = --help ] && continue   # every tool takes --help, even if its usage does not say so
    printf '%s\n' "$help" | has_opt "$o" || { echo "$label: $o is in the man page but not in --help"; bad=1; }
  done
  return $bad
}

# check_tool_page TOOL PAGE
check_tool_page() {
  local help
  [ -f "$2" ] || { echo "$1: no man page $2"; return 1; }
  help=$(help_of "$1") || { echo "$1: --help failed"; return 1; }
  [ -n "$help" ] || { echo "$1: --help printed nothing"; return 1; }
  check_opts "$1" "$help" "$(section "$2" OPTIONS)" "$(norm "$2")"
}

# stage_defaults TOOL: "NAME VALUE" for each option whose --help default (in
# brackets at the end of its line) is a plain value such as 1s, 5ms or 1000
stage_defaults() {
  help_of "$1" | sed -nE 's/^ +--([a-z0-9-]+)( [A-Z/]+)? .*\[([0-9][0-9a-z./]*)\]$/\1 \3/p'
}

# check_defaults TOOL PAGE CONFIG_DOC: each such default is the one the man
# page's entry for the option and configuration.md's row give
check_defaults() {
  local tool=$1 name val para bad=0 n=0
  while read -r name val; do
    n=$((n + 1))
    para=$(section "$2" OPTIONS | awk -v o="--$name" '
      /^\.(TP|SS|PP)/ { on = 0; tag = ($1 == ".TP"); next }
      tag { tag = 0; n = split($0, w, /[ ,"]+/); for (i = 1; i <= n; i++) if (w[i] == o) on = 1 }
      on')
    printf '%s\n' "$para" | tr '\n' ' ' | grep -qE "default:? $val([^0-9a-z]|\$)" ||
      { echo "$tool: --$name: the man page does not give the default $val of --help"; bad=1; }
    grep -E "^\| \`--$name[ \`]" "$3" | grep -E "\`$tool\`|every stage" | grep -qF "\`$val\`" ||
      { echo "$tool: --$name: $3 does not give the default $val of --help"; bad=1; }
  done < <(stage_defaults "$tool")
  [ "$n" -gt 0 ] || { echo "$tool: no defaults found in --help"; bad=1; }
  return $bad
}

# check_delayer_page PAGE: each subcommand's subsection against `delayer help SUB`
check_delayer_page() {
  local sub help text bad=0
  for sub in $(delayer_subcommands) help; do
    text=$(subsection "$1" "$sub")
    [ -n "$text" ] || { echo "delayer $sub: no subsection '.SS $sub' in $1"; bad=1; continue; }
    help=$("$BIN/delayer" help "$sub" 2>&1) || { echo "delayer help $sub failed"; bad=1; continue; }
    check_opts "delayer $sub" "$help" "$text" "$text" || bad=1
  done
  return $bad
}

# check_render PAGE: renders, no groff warnings, standard sections, exit table
check_render() {
  local page=$1 out warn s code bad=0
  warn=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
  [ -z "$warn" ] || { echo "$page: groff: $warn"; bad=1; }
  out=$(MANWIDTH=80 man -l "$page" 2>&1) || { echo "$page: man -l failed: $out"; bad=1; }
  for s in NAME SYNOPSIS DESCRIPTION OPTIONS ENVIRONMENT "EXIT STATUS" EXAMPLES "SEE ALSO"; do
    grep -qE "^\.SH \"?$s\"?\$" "$page" || { echo "$page: no section $s"; bad=1; }
    printf '%s\n' "$out" | grep -q "^$s\$" || { echo "$page: section $s not rendered"; bad=1; }
  done
  for code in 0 1 2 3 100 111; do
    section "$page" "EXIT STATUS" | tags | grep -qx "\.B $code" ||
      { echo "$page: exit status $code missing from the table"; bad=1; }
  done
  return $bad
}

# check_links FILE...: every relative markdown link of each file exists
check_links() {
  local f t bad=0
  for f in "$@"; do
    while IFS= read -r t; do
      case $t in http://* | https://* | mailto:* | "#"*) continue ;; esac
      t=${t%%#*}
      [ -e "$(dirname "$f")/$t" ] || { echo "$f: link to $t: no such file"; bad=1; }
    done < <(grep -oE '\]\([^)[:space:]]+\)' "$f" | sed -E 's/^\]\((.*)\)$/\1/')
  done
  return $bad
}

# every environment variable the code reads
code_vars() {
  {
    grep -ohE '[a-z_]*env[a-z_]*\("[A-Z][A-Z0-9_]*"' "$REPO"/lib/*.c "$REPO"/tools/*.c | sed -E 's/.*\("(.*)"/\1/'
    grep -ohE '"(DELAYER|AWS|LOCAL_AWS)_[A-Z0-9_]*' "$REPO"/lib/*.c "$REPO"/tools/*.c | tr -d '"'
    grep -ohE '\$\{?(DELAYER|AWS|LOCAL_AWS)_[A-Z0-9_]*' "$REPO"/scripts/* | sed -E 's/^\$\{?//'
  } | sort -u
}

# check_config DOC: every code variable is named in DOC (a name ending in
# "_" is a prefix, as AWS_ENDPOINT_URL_<SERVICE>)
check_config() {
  local v bad=0
  for v in $(code_vars); do
    case $v in
      *_) grep -qF -- "$v" "$1" ;;
      *) grep -qE -- "(^|[^A-Z0-9_])$v([^A-Z0-9_]|\$)" "$1" ;;
    esac || { echo "$1: $v is read by the code but not documented"; bad=1; }
  done
  return $bad
}

# ---- tests ----

test_every_tool_has_a_man_page_with_its_options() {
  local t out
  for t in $(tool_names); do
    [ "$t" = delayer ] && continue
    out=$(check_tool_page "$t" "$DOCS/$t.1")
    assertTrue "$t: $out" $?
  done
  out=$(check_tool_page delayer "$DOCS/delayer.1")
  assertTrue "delayer: $out" $?
}

test_stage_defaults_agree_with_help() {
  local t out
  for t in ddb-scan-due sqs-push sqs-drain sns-publish state-update; do
    out=$(check_defaults "$t" "$DOCS/$t.1" "$DOCS/configuration.md")
    assertTrue "$out" $?
  done
}

test_every_delayer_subcommand_has_a_subsection_with_its_options() {
  local out n
  n=$(delayer_subcommands | wc -l)
  assertTrue "delayer.c has subcommands ($n)" "[ $n -ge 10 ]"
  out=$(check_delayer_page "$DOCS/delayer.1")
  assertTrue "$out" $?
}

test_man_pages_render_without_warnings() {
  local p out n=0
  for p in "$DOCS"/*.1; do
    out=$(check_render "$p")
    assertTrue "$out" $?
    n=$((n + 1))
  done
  assertTrue "man pages found: $n" "[ $n -ge 10 ]"
}

test_readme_links_exist_and_cover_every_doc() {
  local out d
  out=$(check_links "$REPO/README.md" "$DOCS/architecture.md" "$DOCS/configuration.md")
  assertTrue "$out" $?
  for d in "$DOCS"/*.md; do
    grep -qF "](docs/${d##*/})" "$REPO/README.md"
    assertTrue "README.md does not link docs/${d##*/}" $?
  done
}

test_configuration_names_every_variable_the_code_reads() {
  local out n
  n=$(code_vars | wc -l)
  assertTrue "variables found in the code: $n" "[ $n -ge 30 ]"
  out=$(check_config "$DOCS/configuration.md")
  assertTrue "$out" $?
}

# The checks can fail: doctored copies must be caught.
test_checks_catch_a_missing_option() {
  local page=$SHUNIT_TMPDIR/sqs-push.1 out
  grep -v 'linger' "$DOCS/sqs-push.1" >"$page"
  out=$(check_tool_page sqs-push "$page")
  assertFalse "an option removed from the man page is not noticed" $?
  assertContains "$out" "--linger is in --help but not in the man page"
  sed 's/^\.BI \\-\\-linger " MS"$/.BI \\-\\-lingering " MS"/' "$DOCS/sqs-push.1" >"$page"
  out=$(check_tool_page sqs-push "$page")
  assertFalse "an option not in --help is not noticed" $?
  assertContains "$out" "--lingering is in the man page but not in --help"
  page=$SHUNIT_TMPDIR/delayer.1
  awk '/^\.SS watch/ { skip = 1 } /^\.SS help/ { skip = 0 } !skip' "$DOCS/delayer.1" >"$page"
  out=$(check_delayer_page "$page")
  assertFalse "a missing subcommand subsection is not noticed" $?
  assertContains "$out" "no subsection '.SS watch'"
}

test_checks_catch_a_wrong_default() {
  local page=$SHUNIT_TMPDIR/sns-publish.1 doc=$SHUNIT_TMPDIR/configuration.md out
  sed 's/^\\fB50ms\\fP)\.$/\\fB40ms\\fP)./; s/(default \\fB50ms\\fP)/(default \\fB40ms\\fP)/' "$DOCS/sns-publish.1" >"$page"
  sed 's/^| `--max-hold DURATION` | `sns-publish` | `5s` |/| `--max-hold DURATION` | `sns-publish` | `6s` |/' "$DOCS/configuration.md" >"$doc"
  out=$(check_defaults sns-publish "$page" "$doc")
  assertFalse "a wrong default is not noticed" $?
  assertContains "$out" "--commit-lead: the man page does not give the default 50ms"
  assertContains "$out" "--max-hold: $doc does not give the default 5s"
}

test_checks_catch_a_bad_page_a_dead_link_and_a_missing_variable() {
  local f=$SHUNIT_TMPDIR/bad.1 out
  printf '.TH BAD 1\n.SH NAME\nbad \\- bad\n.SH EXIT STATUS\n.TP\n.B 0\nok\n.BI \\fQ\n' >"$f"
  out=$(check_render "$f")
  assertFalse "a broken page is not noticed" $?
  assertContains "$out" "no section OPTIONS"
  assertContains "$out" "exit status 111 missing"
  f=$SHUNIT_TMPDIR/links.md
  printf 'see [x](no-such-doc.md) and [y](https://example.com)\n' >"$f"
  out=$(check_links "$f")
  assertFalse "a dead link is not noticed" $?
  assertContains "$out" "no-such-doc.md"
  f=$SHUNIT_TMPDIR/configuration.md
  sed 's/DELAYER_GRACE/DELAYER_GR/g' "$DOCS/configuration.md" >"$f"
  out=$(check_config "$f")
  assertFalse "an undocumented variable is not noticed" $?
  assertContains "$out" "DELAYER_GRACE is read by the code"
}

# mode PATH: octal permission bits
mode() { stat -c %a "$1"; }

test_make_install_layout() {
  local root=$SHUNIT_TMPDIR/inst u t p f out
  rm -rf "$root"
  out=$(make -s -C "$REPO" install DESTDIR="$root" PREFIX=/usr 2>&1)
  assertTrue "make install failed: $out" $?
  u=$root/usr
  for t in "$REPO"/tools/*.c; do
    t=${t##*/}; t=${t%.c}
    assertTrue "usr/bin/$t missing" "[ -f '$u/bin/$t' ] && [ ! -L '$u/bin/$t' ]"
    assertEquals "usr/bin/$t mode" 755 "$(mode "$u/bin/$t")"
  done
  assertEquals "the installed delayer runs" "delayer 0.1.0" "$("$u/bin/delayer" --version)"
  # the supervisor: in libexec, with its neighbours, linked from bin
  assertEquals "supervisor mode" 755 "$(mode "$u/libexec/delayer/scripts/delayer-supervise")"
  assertEquals "bin/delayer-supervise link" ../libexec/delayer/scripts/delayer-supervise "$(readlink "$u/bin/delayer-supervise")"
  assertEquals "libexec bin link" ../../bin "$(readlink "$u/libexec/delayer/bin")"
  assertEquals "libexec pipelines link" ../../share/delayer/pipelines "$(readlink "$u/libexec/delayer/pipelines")"
  for p in "$REPO"/pipelines/*.conf; do
    assertEquals "pipeline ${p##*/} mode" 644 "$(mode "$u/share/delayer/pipelines/${p##*/}")"
  done
  for p in "$DOCS"/*.1; do
    p=${p##*/}
    if [ "$p" = local-aws.1 ]; then
      assertFalse "local-aws.1 is installed, local-aws is not" "[ -e '$u/share/man/man1/$p' ]"
    else
      assertEquals "man page $p mode" 644 "$(mode "$u/share/man/man1/$p" 2>/dev/null)"
    fi
  done
  assertEquals "README mode" 644 "$(mode "$u/share/doc/delayer/README.md")"
  for f in "$DOCS"/*.md; do
    assertEquals "doc ${f##*/} mode" 644 "$(mode "$u/share/doc/delayer/docs/${f##*/}" 2>/dev/null)"
  done
  assertEquals "local-aws (a development tool) is installed" "" "$(find "$root" -name 'local-aws*')"
  assertEquals "nothing outside PREFIX" usr "$(ls "$root")"
  # man finds the installed pages
  out=$(MANPATH="$u/share/man" man -w delayer-supervise 2>&1)
  assertEquals "man -w" "$u/share/man/man1/delayer-supervise.1" "$out"
  # the installed supervisor finds its pipelines and the installed tools
  out=$(env -u DELAYER_PIPELINES "$u/bin/delayer-supervise" -p local check 2>&1)
  assertTrue "installed supervisor check: $out" $?
  assertContains "$out" "$u/libexec/delayer/pipelines/local.conf: ok"
  printf '%s\n' "stage probe ready=none cmd=sh -c '\"\$DELAYER_BIN\"/delayer --version >probe.out; exec sleep 60'" \
    >"$SHUNIT_TMPDIR/probe.conf"
  RUN=$SHUNIT_TMPDIR/run
  out=$(env -u DELAYER_BIN -u DELAYER_PIPELINES "$u/bin/delayer-supervise" -c "$SHUNIT_TMPDIR/probe.conf" -d "$RUN" start --timeout 10 2>&1)
  assertTrue "installed supervisor start: $out" $?
  for _ in $(seq 50); do [ -s "$RUN/probe.out" ] && break; sleep 0.1; done
  assertEquals "a stage of the installed supervisor runs the installed tools" "delayer 0.1.0" "$(cat "$RUN/probe.out" 2>/dev/null)"
  "$u/bin/delayer-supervise" -c "$SHUNIT_TMPDIR/probe.conf" -d "$RUN" stop >/dev/null 2>&1
  assertTrue "installed supervisor stop" $?
  RUN=
}

tearDown() {
  # a failed assertion above must not leave the probe pipeline running
  if [ -n "${RUN:-}" ] && [ -f "$RUN/supervise.pid" ]; then
    "$REPO/scripts/delayer-supervise" -c "$SHUNIT_TMPDIR/probe.conf" -d "$RUN" stop >/dev/null 2>&1
  fi
  RUN=
}

oneTimeSetUp() {
  local t
  for t in groff man; do
    command -v $t >/dev/null || { echo "test_docs: $t is missing (scripts/setup installs groff-base and man-db)" >&2; exit 1; }
  done
  [ -x "$BIN/delayer" ] || { echo "test_docs: no $BIN/delayer (run make)" >&2; exit 1; }
}

# shellcheck source=tests/lib/stack.sh
. "$REPO/tests/lib/stack.sh"   # for its egrep shim only: no stack is started
# shellcheck disable=SC1091
. /usr/share/shunit2/shunit2
