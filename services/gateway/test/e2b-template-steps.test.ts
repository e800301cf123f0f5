import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TemplateStepKind as K } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import {
  buildTags,
  copySource,
  failedStep,
  parseBuildStart,
  parseTemplateName,
  translateSteps,
} from "../src/compat/e2b/template-steps.js";
import { InvalidArgumentError } from "../src/errors.js";

const SHA = "a".repeat(64);
const E2B_HASH = "b".repeat(64);

describe("E2B template builds as dnah steps", () => {
  it("reads the SDK's captured body: base, start with waitForPort as a port check", () => {
    const spec = parseBuildStart({
      startCmd: "python3 -m http.server 8080",
      readyCmd: '[ -n "$(ss -Htuln sport = :8080)" ]',
      steps: [{ type: "RUN", args: ["true"], force: false }],
      force: false,
      fromTemplate: "base",
    });
    assert.equal(spec.from, "base");
    assert.deepEqual(spec.start, {
      command: "python3 -m http.server 8080",
      readyPort: 8080,
      readyCommand: "",
    });
    // Any other ready command runs as a command.
    const url = parseBuildStart({ startCmd: "x", readyCmd: "curl -sf http://localhost:1/", steps: [] });
    assert.deepEqual(url.start, { command: "x", readyPort: 0, readyCommand: "curl -sf http://localhost:1/" });
  });

  it("maps the SDK's default image to base and refuses registry images, naming the fix", () => {
    assert.equal(parseBuildStart({ steps: [], fromImage: "e2bdev/base" }).from, "base");
    assert.equal(parseBuildStart({ steps: [] }).from, "base");
    assert.throws(
      () => parseBuildStart({ steps: [], fromImage: "python:3.12" }),
      (e: unknown) => e instanceof InvalidArgumentError && /fromTemplate\('base'\)/.test(e.message),
    );
    assert.throws(
      () => parseBuildStart({ steps: [], fromImage: "e2bdev/base", fromImageRegistry: { type: "registry" } }),
      InvalidArgumentError,
    );
  });

  it("starts from a built-in base as E2B does (user in /home/user) and records where each step came from", () => {
    const spec = parseBuildStart({
      steps: [
        { type: "RUN", args: ["apt-get install -y jq", "root"], force: false },
        {
          type: "COPY",
          args: ["site/*.html", "/srv/www", "user", "0755"],
          force: false,
          filesHash: E2B_HASH,
        },
        { type: "ENV", args: ["GREETING", "$HOME"], force: false },
        { type: "USER", args: ["app", "true"], force: true },
      ],
      fromTemplate: "base",
    });
    const { steps, origins } = translateSteps(spec.steps, {
      builtinBase: true,
      sha256Of: (h) => (h === E2B_HASH ? SHA : undefined),
    });
    assert.deepEqual(
      steps.map((s) => [K[s.kind], s.args, s.filesHash, s.force]),
      [
        ["USER", ["user"], "", false],
        ["WORKDIR", ["/home/user"], "", false],
        ["RUN", ["apt-get install -y jq", "root"], "", false],
        // A glob copies from its non-glob folder; the tar holds only the matches.
        ["COPY", ["site", "/srv/www", "user", "0755"], SHA, false],
        // Literal: no shell sees the value.
        ["ENV", ["GREETING", "$HOME"], "", false],
        [
          "RUN",
          ["id -u app >/dev/null 2>&1 || useradd --create-home --shell /bin/bash app", "root"],
          "",
          true,
        ],
        ["USER", ["app"], "", true],
      ],
    );
    assert.deepEqual(origins, ["base", "base", 1, 2, 3, 4, 4]);
    assert.equal(failedStep("step 4/7 COPY site /srv/www failed with exit code 2", origins), "2");
    assert.equal(failedStep("step 1/7 USER user", origins), "base");
    assert.equal(failedStep("the start command exited before it was ready", origins), "finalize");
    // From a template built here, its own user and workdir stand.
    assert.equal(translateSteps([], { builtinBase: false, sha256Of: () => undefined }).steps.length, 0);
  });

  it("refuses a COPY whose files were not uploaded, and unknown step types", () => {
    const copy = { type: "COPY", args: ["a", "/a", "", ""], force: false, filesHash: E2B_HASH };
    assert.throws(
      () => translateSteps([copy], { builtinBase: false, sha256Of: () => undefined }),
      /were not uploaded/,
    );
    assert.throws(
      () =>
        translateSteps([{ type: "HEALTHCHECK", args: [], force: false, filesHash: undefined }], {
          builtinBase: false,
          sha256Of: () => undefined,
        }),
      /unknown step type/,
    );
  });

  it("names, tags and glob sources", () => {
    assert.deepEqual(parseTemplateName("My-Tpl:V1"), { name: "my-tpl", tag: "v1" });
    assert.deepEqual(parseTemplateName("my-tpl"), { name: "my-tpl", tag: undefined });
    assert.throws(() => parseTemplateName("team/my-tpl"), /namespaces/);
    assert.throws(() => parseTemplateName(""), /Name must be provided/);
    assert.deepEqual(buildTags(undefined, []), ["default"]);
    assert.deepEqual(buildTags("v1", ["prod", "v1"]), ["v1", "prod"]);
    assert.equal(copySource("*.py"), ".");
    assert.equal(copySource("app/*.txt"), "app");
    assert.equal(copySource("app/index.html"), "app/index.html");
  });
});
