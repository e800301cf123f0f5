import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  Daytona,
  DaytonaGitBranchExistsError,
  DaytonaGitBranchNotFoundError,
  DaytonaGitMergeConflictError,
  DaytonaGitPushRejectedError,
  DaytonaGitRepoNotFoundError,
  type Sandbox,
} from "@daytonaio/sdk";
import { startTestStack, type TestStack } from "./harness.js";

const REMOTE = "file:///home/user/remote.git";

/** The Daytona toolbox's git, driven by the real SDK 0.218.0 against a bare remote in the same sandbox. */
describe("daytona SDK 0.218.0 toolbox: git", () => {
  let s: TestStack;
  let daytona: Daytona;
  let sbx: Sandbox;
  const remoteSha = async (ref: string) =>
    (await sbx.process.executeCommand(`git --git-dir=remote.git rev-parse ${ref}`)).result.trim();

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    daytona = new Daytona({ apiKey: s.key, apiUrl: `${s.url}/api` });
    sbx = await daytona.create();
  });
  after(async () => {
    await sbx?.delete().catch(() => {});
    await daytona?.[Symbol.asyncDispose]();
    await s?.close();
  });

  test("init a bare remote and a seed repo; commit with an author; push sets the remote ref", async () => {
    await sbx.git.init("remote.git", true, "main");
    await sbx.git.init("seed", false, "main");
    await sbx.fs.uploadFile(Buffer.from("# seed\n"), "seed/README.md");
    const st = await sbx.git.status("seed");
    assert.equal(st.currentBranch, "main");
    assert.deepEqual(
      st.fileStatus.map((f) => [f.name, f.staging, f.worktree]),
      [["README.md", "Untracked", "Untracked"]],
    );
    await sbx.git.add("seed", ["README.md"]);
    const added = await sbx.git.status("seed");
    assert.deepEqual(
      added.fileStatus.map((f) => [f.name, f.staging]),
      [["README.md", "Added"]],
    );
    const c = await sbx.git.commit("seed", "first commit", "Ada Lovelace", "ada@example.com");
    assert.match(c.sha, /^[0-9a-f]{40}$/);
    const author = await sbx.process.executeCommand("git -C seed log -1 --format='%an <%ae> %s'");
    assert.equal(author.result.trim(), "Ada Lovelace <ada@example.com> first commit");
    await sbx.git.remoteAdd("seed", "origin", REMOTE);
    assert.equal(await sbx.git.remoteGet("seed", "origin"), REMOTE);
    await sbx.git.push("seed", undefined, undefined, "main", "origin", true);
    assert.equal(await remoteSha("main"), c.sha);
  });

  test("clone, clean status on main, untracked → added → commit → push; pull elsewhere", async () => {
    await sbx.git.clone(REMOTE, "clone1");
    const st = await sbx.git.status("clone1");
    assert.equal(st.currentBranch, "main");
    assert.deepEqual(st.fileStatus, []);
    assert.equal(st.upstream, "origin/main");

    await sbx.fs.uploadFile(Buffer.from("new\n"), "clone1/new.txt");
    assert.deepEqual(
      (await sbx.git.status("clone1")).fileStatus.map((f) => [f.name, f.worktree]),
      [["new.txt", "Untracked"]],
    );
    await sbx.git.add("clone1", ["."]);
    assert.deepEqual(
      (await sbx.git.status("clone1")).fileStatus.map((f) => [f.name, f.staging]),
      [["new.txt", "Added"]],
    );
    const c = await sbx.git.commit("clone1", "add new.txt", "Bob", "bob@example.com");
    assert.equal((await sbx.git.status("clone1")).ahead, 1);
    await sbx.git.push("clone1");
    assert.equal(await remoteSha("main"), c.sha);

    await sbx.git.pull("seed", undefined, undefined, "main", "origin");
    assert.equal((await sbx.fs.downloadFile("seed/new.txt")).toString(), "new\n");
  });

  test("branches: create (checked out), list, checkout, delete; missing and duplicate names", async () => {
    await sbx.git.createBranch("clone1", "feature");
    let b = await sbx.git.branches("clone1");
    assert.deepEqual([...b.branches].sort(), ["feature", "main"]);
    assert.equal((await sbx.git.status("clone1")).currentBranch, "feature");
    await assert.rejects(
      sbx.git.createBranch("clone1", "main"),
      (e: unknown) => e instanceof DaytonaGitBranchExistsError,
    );
    await sbx.git.checkoutBranch("clone1", "main");
    assert.equal((await sbx.git.status("clone1")).currentBranch, "main");
    await sbx.git.deleteBranch("clone1", "feature");
    b = await sbx.git.branches("clone1");
    assert.deepEqual(b.branches, ["main"]);
    await assert.rejects(
      sbx.git.deleteBranch("clone1", "feature"),
      (e: unknown) => e instanceof DaytonaGitBranchNotFoundError,
    );
    await assert.rejects(
      sbx.git.checkoutBranch("clone1", "no-such-branch"),
      (e: unknown) => e instanceof DaytonaGitBranchNotFoundError,
    );
  });

  test("clone at a commit; errors: missing repo, rejected push, merge conflict", async () => {
    const first = (
      await sbx.process.executeCommand("git -C seed rev-list --max-parents=0 HEAD")
    ).result.trim();
    await sbx.git.clone(REMOTE, "clone2", undefined, first);
    const head = (await sbx.process.executeCommand("git -C clone2 rev-parse HEAD")).result.trim();
    assert.equal(head, first);

    await assert.rejects(
      sbx.git.status("not-a-repo"),
      (e: unknown) => e instanceof DaytonaGitRepoNotFoundError,
    );
    await assert.rejects(
      sbx.git.clone("file:///home/user/nothing-here.git", "clone3"),
      (e: unknown) => e instanceof DaytonaGitRepoNotFoundError,
    );

    // clone1 and seed both change README.md; clone1 pushes first.
    await sbx.fs.uploadFile(Buffer.from("# from clone1\n"), "clone1/README.md");
    await sbx.git.add("clone1", ["README.md"]);
    await sbx.git.commit("clone1", "clone1 edit", "Bob", "bob@example.com");
    await sbx.git.push("clone1");
    await sbx.fs.uploadFile(Buffer.from("# from seed\n"), "seed/README.md");
    await sbx.git.add("seed", ["README.md"]);
    await sbx.git.commit("seed", "seed edit", "Ada", "ada@example.com");
    await assert.rejects(sbx.git.push("seed"), (e: unknown) => e instanceof DaytonaGitPushRejectedError);
    await assert.rejects(sbx.git.pull("seed"), (e: unknown) => e instanceof DaytonaGitMergeConflictError);
  });
});
