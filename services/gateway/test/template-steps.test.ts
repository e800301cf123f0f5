import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TemplateStepKind as K } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { InvalidArgumentError } from "../src/errors.js";
import { buildInput } from "../src/rest/templates.js";
import {
  aptInstallCommand,
  shellJoin,
  shellQuote,
  startFromJson,
  stepsFromJson,
} from "../src/templates/steps.js";

const HASH = "ab".repeat(32);
const steps = (input: unknown) =>
  stepsFromJson(input).map((s) => [K[s.kind], ...s.args, ...(s.filesHash ? [s.filesHash] : [])]);
const refused = (fn: () => unknown, message: RegExp) =>
  assert.throws(fn, (e) => e instanceof InvalidArgumentError && message.test(e.message));

describe("native template steps", () => {
  it("quotes words for bash only when needed", () => {
    assert.equal(shellQuote("jq"), "jq");
    assert.equal(shellQuote("a b"), "'a b'");
    assert.equal(shellQuote("it's"), "'it'\\''s'");
    assert.equal(shellQuote("$(rm -rf /)"), "'$(rm -rf /)'");
    assert.equal(shellJoin(["python3", "-m", "http.server", "8080"]), "python3 -m http.server 8080");
  });

  it("translates every step type to the vmm's five kinds", () => {
    assert.deepEqual(
      steps([
        { type: "apt", packages: ["jq", "curl=7.88.1-10"] },
        { type: "user", name: "user" },
        { type: "run", command: "echo hi > /tmp/x" },
        { type: "npm", packages: ["typescript@5"], global: true },
        { type: "npm", packages: ["@scope/pkg"] },
        { type: "pip", packages: ["requests>=2", "pandas[excel]==2.2"] },
        { type: "copy", src: "app/", dest: "/app/", filesHash: HASH.toUpperCase() },
        { type: "env", vars: { A: "1", B: "two words" } },
        { type: "workdir", path: "/app" },
        { type: "run", command: "id", user: "root", force: true },
        { type: "copy", src: "run.sh", dest: "/app/run.sh", filesHash: HASH, mode: "0755" },
        { type: "copy", src: "data", dest: "/data", filesHash: HASH, owner: "user:user" },
      ]),
      [
        ["RUN", aptInstallCommand(["jq", "curl=7.88.1-10"])],
        ["USER", "user"],
        ["RUN", "echo hi > /tmp/x"],
        ["RUN", "npm install -g --no-fund --no-audit typescript@5", "root"],
        ["RUN", "npm install --no-fund --no-audit @scope/pkg"],
        [
          "RUN",
          "python3 -m pip install --no-cache-dir --break-system-packages 'requests>=2' 'pandas[excel]==2.2'",
        ],
        ["COPY", "app/", "/app/", HASH],
        ["ENV", "A", "1", "B", "two words"],
        ["WORKDIR", "/app"],
        ["RUN", "id", "root"],
        ["COPY", "run.sh", "/app/run.sh", "", "0755", HASH],
        ["COPY", "data", "/data", "user:user", HASH],
      ],
    );
    assert.equal(
      aptInstallCommand(["jq"]),
      "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends jq && rm -rf /var/lib/apt/lists/*",
    );
    // apt as the current user root needs no switch; force is kept on the step.
    const [apt] = stepsFromJson([{ type: "apt", packages: ["jq"], force: true }]);
    assert.equal(apt?.kind, K.RUN);
    assert.equal(apt?.force, true);
    assert.deepEqual(stepsFromJson(undefined), []);
  });

  it("refuses what it does not understand, naming the step", () => {
    refused(() => stepsFromJson({}), /'steps' must be an array/);
    refused(
      () => stepsFromJson([{ type: "yum", packages: ["x"] }]),
      /steps\[0\]\.type must be one of run, apt/,
    );
    refused(
      () => stepsFromJson([{ type: "run", command: "x", shell: "sh" }]),
      /steps\[0\]: unknown field 'shell'/,
    );
    refused(
      () => stepsFromJson([{ type: "run", command: "" }]),
      /steps\[0\]\.command must be a non-empty string/,
    );
    refused(() => stepsFromJson([{ type: "run" }]), /steps\[0\]\.command is required/);
    refused(() => stepsFromJson([{ type: "run", command: 5 }]), /must be a non-empty string/);
    refused(() => stepsFromJson([{ type: "apt", packages: [] }]), /packages must be an array of 1 to 500/);
    refused(
      () => stepsFromJson([{ type: "apt", packages: ["-y; rm"] }]),
      /packages\[0\]: '-y; rm' is not a package/,
    );
    refused(() => stepsFromJson([{ type: "pip", packages: ["a b"] }]), /is not a package name/);
    refused(
      () => stepsFromJson([{ type: "copy", src: "a", dest: "/a", filesHash: "nope" }]),
      /filesHash must be the sha256/,
    );
    refused(() => stepsFromJson([{ type: "env", vars: { "1A": "x" } }]), /'1A' is not a variable name/);
    refused(() => stepsFromJson([{ type: "env", vars: { A: 1 } }]), /vars\.A must be a string/);
    refused(() => stepsFromJson([{ type: "env", vars: {} }]), /vars must be a non-empty object/);
    refused(() => stepsFromJson([{ type: "workdir", path: "app" }]), /path must be absolute/);
    refused(() => stepsFromJson([{ type: "user", name: "bad name" }]), /must be a user name/);
    refused(() => stepsFromJson([{ type: "user", name: "Admin" }]), /must be a user name/);
    refused(
      () => stepsFromJson([{ type: "copy", src: "a", dest: "/a", filesHash: HASH, mode: 755 }]),
      /mode must be an octal mode like 0755 \(a string\)/,
    );
    refused(
      () => stepsFromJson([{ type: "copy", src: "a", dest: "/a", filesHash: HASH, owner: "1000" }]),
      /owner must be user or user:group/,
    );
    refused(
      () => stepsFromJson([{ type: "run", command: "x", force: "yes" }]),
      /force must be true or false/,
    );
    refused(() => stepsFromJson([null]), /steps\[0\] must be an object/);
  });

  it("reads the start command strictly", () => {
    assert.deepEqual(startFromJson({ command: "python3 -m http.server 8080", readyPort: 8080 }), {
      command: "python3 -m http.server 8080",
      readyPort: 8080,
      readyCommand: "",
    });
    assert.equal(startFromJson(undefined), undefined);
    refused(() => startFromJson({ readyPort: 8080 }), /start\.command is required/);
    refused(() => startFromJson({ command: "x", readyPort: 0 }), /readyPort must be a port/);
    refused(() => startFromJson({ command: "x", port: 1 }), /unknown field 'port'/);
  });
});

describe("the POST /v1/templates body", () => {
  it("takes native from + steps, defaulting to base", () => {
    const { input, warnings } = buildInput({
      name: "py",
      aliases: ["python"],
      public: true,
      steps: [{ type: "run", command: "true" }],
      start: { command: "sleep infinity" },
      memoryMib: 1024,
    });
    assert.deepEqual(warnings, []);
    assert.equal(input.from, "base");
    assert.deepEqual(input.aliases, ["python"]);
    assert.equal(input.public, true);
    assert.equal(input.memoryMib, 1024);
    assert.equal(input.cpuCount, 0);
    assert.equal(input.start?.command, "sleep infinity");
    assert.equal(input.steps.length, 1);
  });

  it("takes a Dockerfile, its CMD as the start command and the body's readiness", () => {
    const { input, warnings } = buildInput({
      name: "web",
      dockerfile: 'FROM base\nCOPY site /srv\nEXPOSE 8080\nCMD ["python3", "-m", "http.server", "8080"]\n',
      contextSha256: HASH,
      start: { readyPort: 8080 },
    });
    assert.equal(input.from, "base");
    assert.deepEqual(input.start, {
      command: "python3 -m http.server 8080",
      readyPort: 8080,
      readyCommand: "",
    });
    assert.equal(input.steps[0]?.filesHash, HASH);
    assert.match(warnings[0]!, /^line 3: EXPOSE is ignored/);
  });

  it("refuses mixed or incomplete bodies", () => {
    refused(() => buildInput({}), /'name' is required/);
    refused(
      () => buildInput({ name: "x", dockerfile: "FROM base", steps: [] }),
      /either 'dockerfile' or 'from' and 'steps'/,
    );
    refused(() => buildInput({ name: "x", contextSha256: HASH }), /'contextSha256' goes with a 'dockerfile'/);
    refused(
      () => buildInput({ name: "x", dockerfile: "FROM base\nCMD a", start: { command: "b" } }),
      /CMD\/ENTRYPOINT or 'start', not both/,
    );
    refused(() => buildInput({ name: "x", aliases: "py" }), /'aliases' must be an array of strings/);
    refused(() => buildInput({ name: "x", public: "yes" }), /'public' must be true or false/);
  });
});
