import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, test } from "node:test";
import { codeCommand, codeLanguage } from "./code-run.js";
import { gitErrorCode, parseStatusV2 } from "./git-errors.js";
import { MarkerScanner, parseGrepZ, partialSuffix } from "./parse.js";
import { closeReason, envsFromProtocols } from "./pty.js";
import { quote, words } from "./shell.js";

describe("toolbox: MarkerScanner", () => {
  test("output before the marker, the fixed-length status after it", () => {
    const s = new MarkerScanner("END-x-O", 3);
    const r = s.feed(Buffer.from("hello\nEND-x-O005tail"));
    assert.equal(r.output.toString(), "hello\n");
    assert.equal(r.found?.extra, "005");
    assert.equal(r.found?.rest.toString(), "tail");
  });

  test("a marker split across chunks, and a false start, are handled", () => {
    const s = new MarkerScanner("END-x-O", 3);
    const outs: string[] = [];
    let found: string | undefined;
    for (const c of ["abc EN", "D-y then END-", "x-", "O1", "27"]) {
      const r = s.feed(Buffer.from(c));
      outs.push(r.output.toString());
      if (r.found) found = r.found.extra;
    }
    assert.equal(outs.join(""), "abc END-y then ");
    assert.equal(found, "127");
    // Output is held back only while it could still be the marker.
    assert.equal(outs[0], "abc ");
  });

  test("partialSuffix", () => {
    assert.equal(partialSuffix(Buffer.from("xxEN"), Buffer.from("END")), 2);
    assert.equal(partialSuffix(Buffer.from("xxE"), Buffer.from("END")), 1);
    assert.equal(partialSuffix(Buffer.from("xx"), Buffer.from("END")), 0);
  });
});

describe("toolbox: command output parsers", () => {
  test("grep -rnZ output", () => {
    const out = "/a/b.ts\x002:TODO: x:y\n/a/c d.ts\x0010:  TODO\nbroken line\n";
    assert.deepEqual(parseGrepZ(out), [
      { file: "/a/b.ts", line: 2, content: "TODO: x:y" },
      { file: "/a/c d.ts", line: 10, content: "  TODO" },
    ]);
  });

  test("git status --porcelain=v2 -z --branch", () => {
    const out = [
      "# branch.oid 0123",
      "# branch.head main",
      "# branch.upstream origin/main",
      "# branch.ab +2 -1",
      "1 A. N... 000000 100644 100644 0000 1111 new file.txt",
      "1 .M N... 100644 100644 100644 2222 2222 mod.txt",
      "2 R. N... 100644 100644 100644 3333 3333 R100 renamed.txt",
      "old.txt",
      "? untracked.txt",
      "",
    ].join("\0");
    assert.deepEqual(parseStatusV2(out), {
      currentBranch: "main",
      upstream: "origin/main",
      branchPublished: true,
      ahead: 2,
      behind: 1,
      fileStatus: [
        { name: "new file.txt", extra: "", staging: "Added", worktree: "Unmodified" },
        { name: "mod.txt", extra: "", staging: "Unmodified", worktree: "Modified" },
        { name: "renamed.txt", extra: "old.txt", staging: "Renamed", worktree: "Unmodified" },
        { name: "untracked.txt", extra: "", staging: "Untracked", worktree: "Untracked" },
      ],
    });
    assert.deepEqual(parseStatusV2("# branch.head (detached)\0"), {
      currentBranch: "",
      detached: true,
      branchPublished: false,
      fileStatus: [],
    });
  });

  test("git error messages → Daytona codes", () => {
    const cases: [string, string | undefined][] = [
      ["fatal: Authentication failed for 'https://x/'", "GIT_AUTH_FAILED"],
      ["fatal: could not read Username for 'https://x': terminal prompts disabled", "GIT_AUTH_FAILED"],
      ["fatal: '/x.git' does not appear to be a git repository", "GIT_REPO_NOT_FOUND"],
      ["fatal: not a git repository (or any of the parent directories): .git", "GIT_REPO_NOT_FOUND"],
      ["fatal: a branch named 'main' already exists", "GIT_BRANCH_EXISTS"],
      ["fatal: destination path 'r' already exists and is not an empty directory.", undefined],
      ["error: pathspec 'nope' did not match any file(s) known to git", "GIT_BRANCH_NOT_FOUND"],
      [" ! [rejected]        main -> main (fetch first)", "GIT_PUSH_REJECTED"],
      [" ! [remote rejected] main -> main (pre-receive hook declined)", "GIT_REMOTE_REJECTED"],
      ["CONFLICT (content): Merge conflict in a.txt\nAutomatic merge failed", "GIT_MERGE_CONFLICT"],
      [
        "error: Your local changes to the following files would be overwritten by checkout",
        "GIT_DIRTY_WORKTREE",
      ],
      ["fatal: unable to access 'https://nohost/': Could not resolve host: nohost", "GIT_TRANSPORT_FAILED"],
      ["nothing to commit, working tree clean", undefined],
    ];
    for (const [msg, code] of cases) assert.equal(gitErrorCode(msg), code, msg);
  });
});

describe("toolbox: shell words, code commands, PTY protocol bits", () => {
  test("quote survives bash for awkward words", () => {
    const awkward = ["it's", "$HOME", "a b", "`x`", "\\n", "--", "-c", "'", "", "ü ✓"];
    const out = execFileSync("bash", ["-c", `printf '%s\\0' ${words(...awkward)}`]).toString();
    assert.deepEqual(out.split("\0").slice(0, -1), awkward);
    assert.equal(quote("a'b"), "'a'\\''b'");
  });

  test("code commands per language; unknown languages are a 400", () => {
    assert.equal(codeCommand("python", ["a b"]), "exec 'python3' '-u' '-' 'a b'");
    assert.match(
      codeCommand("typescript", ["x"]),
      /'\/opt\/dnah\/agent\/code-runner\.mjs' 'typescript' '--' 'x'$/,
    );
    assert.equal(codeLanguage(undefined), "python");
    assert.equal(codeLanguage("JavaScript"), "javascript");
    assert.throws(() => codeLanguage("ruby"), /unsupported language/);
  });

  test("PTY envs subprotocol and close reasons", () => {
    const token = Buffer.from(JSON.stringify({ A: "1", B_2: "x y" })).toString("base64url");
    assert.deepEqual(envsFromProtocols(`X-Daytona-Pty-Envs~${token}, X-Daytona-Pty-Exit-Control`), {
      A: "1",
      B_2: "x y",
    });
    assert.deepEqual(envsFromProtocols("X-Daytona-Pty-Exit-Control"), {});
    assert.throws(() => envsFromProtocols("X-Daytona-Pty-Envs~!!!"), /base64url JSON/);
    const long = closeReason({ exitCode: 1, exitReason: "ü".repeat(200) });
    assert.ok(Buffer.byteLength(long) <= 123);
    assert.equal(JSON.parse(long).exitCode, 1);
    assert.equal(closeReason({ exitCode: 0 }), '{"exitCode":0}');
  });
});
