import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TemplateStepKind as K } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { InvalidArgumentError } from "../src/errors.js";
import { isRegistryImage, parseDockerfile } from "../src/templates/dockerfile.js";

const CTX = "cd".repeat(32);
const parse = (text: string) => parseDockerfile(text, CTX);
const steps = (text: string) =>
  parse(text).steps.map((s) => [K[s.kind], ...s.args, ...(s.filesHash ? ["<ctx>"] : [])]);
/** `ctx` null: no context tar was given. */
const refused = (text: string, message: RegExp, ctx: string | null = CTX) =>
  assert.throws(
    () => parseDockerfile(text, ctx ?? undefined),
    (e) => e instanceof InvalidArgumentError && message.test(e.message),
    `expected ${message} for ${JSON.stringify(text)}`,
  );

const REGISTRY =
  /FROM of a registry image needs an image store; FROM a dnah template \(base, code-interpreter, or one of yours\)/;

describe("Dockerfile subset", () => {
  it("parses a typical Dockerfile into steps and a start command", () => {
    const d = parse(`# syntax=docker/dockerfile:1
FROM base AS app
ARG VERSION=1.7
RUN apt-get update && \\
    apt-get install -y jq \\
    # a comment inside a continuation
    && rm -rf /var/lib/apt/lists/*
ENV APP_HOME=/srv/app GREETING="hello world"
ENV LEGACY value with spaces
WORKDIR $APP_HOME
COPY requirements.txt ./
COPY ["src/", "lib/", "./code/"]
RUN ["pip", "install", "-r", "requirements.txt"]
USER user
WORKDIR sub
LABEL maintainer=me
CMD python3 -m http.server 8080
`);
    assert.equal(d.from, "base");
    assert.deepEqual(
      d.steps.map((s) => [K[s.kind], ...s.args]),
      [
        [
          "RUN",
          "export VERSION=1.7; apt-get update &&     apt-get install -y jq     && rm -rf /var/lib/apt/lists/*",
        ],
        ["ENV", "APP_HOME", "/srv/app", "GREETING", "hello world"],
        ["ENV", "LEGACY", "value with spaces"],
        ["WORKDIR", "/srv/app"],
        ["COPY", "requirements.txt", "/srv/app/"],
        ["COPY", "src/", "/srv/app/code/"],
        ["COPY", "lib/", "/srv/app/code/"],
        ["RUN", "export VERSION=1.7; pip install -r requirements.txt"],
        ["USER", "user"],
        ["WORKDIR", "/srv/app/sub"],
      ],
    );
    assert.ok(d.steps.filter((s) => s.kind === K.COPY).every((s) => s.filesHash === CTX));
    assert.deepEqual(d.start, { command: "python3 -m http.server 8080", readyPort: 0, readyCommand: "" });
    assert.deepEqual(d.warnings, ["line 16: LABEL is ignored"]);
  });

  it("substitutes variables as Docker does", () => {
    assert.deepEqual(
      steps(`ARG T=base
FROM $T
ARG T
ARG DIR=/opt
ENV A=1 B=\${A:-unset} C='$A' D="\${DIR}/x" E=\\$A
ENV F=\${NOPE:-fallback} G=\${A:+set} H=$NOPE
WORKDIR \${DIR}/w
`),
      [
        ["ENV", "A", "1", "B", "unset", "C", "$A", "D", "/opt/x", "E", "$A"],
        ["ENV", "F", "fallback", "G", "set", "H", ""],
        ["WORKDIR", "/opt/w"],
      ],
    );
    // ARG T (no default) after FROM takes the global value: exported to RUN.
    assert.deepEqual(steps(`ARG T=base\nFROM \${T}\nARG T\nRUN echo $T`), [
      ["RUN", "export T=base; echo $T"],
    ]);
  });

  it("keeps COPY's --chown and --chmod", () => {
    assert.deepEqual(
      steps("FROM base\nARG U=user\nCOPY --chown=$U:$U --chmod=0755 run.sh /app/\nCOPY --chmod=600 key /k"),
      [
        ["COPY", "run.sh", "/app/", "user:user", "0755", "<ctx>"],
        ["COPY", "key", "/k", "", "600", "<ctx>"],
      ],
    );
  });

  it("builds the start command from ENTRYPOINT and CMD as Docker runs them", () => {
    const start = (text: string) => parse(`FROM base\n${text}`).start;
    assert.equal(
      start('ENTRYPOINT ["node", "server.js"]\nCMD ["--port", "80"]')?.command,
      "node server.js --port 80",
    );
    assert.equal(start('ENTRYPOINT ["node"]\nCMD run this')?.command, "node /bin/sh -c 'run this'");
    assert.equal(start('ENTRYPOINT node server.js\nCMD ["ignored"]')?.command, "node server.js");
    assert.equal(start('CMD ["echo", "it\'s"]')?.command, "echo 'it'\\''s'");
    assert.equal(start("CMD first\nCMD second")?.command, "second");
    assert.equal(start(""), undefined);
    assert.deepEqual(start("CMD serve\nHEALTHCHECK --interval=5s CMD curl -fs localhost:80"), {
      command: "serve",
      readyPort: 0,
      readyCommand: "curl -fs localhost:80",
    });
    assert.equal(start("CMD serve\nHEALTHCHECK CMD true\nHEALTHCHECK NONE")?.readyCommand, "");
    assert.equal(parse("FROM code-interpreter\nRUN true").from, "code-interpreter");
    assert.deepEqual(steps("from base\nrun  echo lower-case works"), [["RUN", "echo lower-case works"]]);
  });

  it("refuses registry images clearly", () => {
    for (const image of ["python:3.12", "ghcr.io/org/img", "ubuntu@sha256:abc", "scratch", "Python"]) {
      assert.ok(isRegistryImage(image), image);
      refused(`FROM ${image}`, REGISTRY);
    }
    assert.ok(!isRegistryImage("my-template.v2"));
    refused(
      "FROM python:3.12-slim AS build\nRUN true",
      /^Dockerfile line 1: FROM 'python:3\.12-slim': FROM of a registry image/,
    );
  });

  it("refuses what it does not support, naming the line", () => {
    refused("RUN true", /line 1: RUN before FROM/);
    refused("", /has no FROM/);
    refused("# only a comment\n", /has no FROM/);
    refused("FROM base\nFROM base", /line 2: multi-stage builds/);
    refused("FROM --platform=linux/amd64 base", /FROM --platform is not supported/);
    refused("FROM base\nADD https://x/y.tgz /y", /line 2: ADD is not supported; use COPY/);
    refused("FROM base\nCOPY --chown=1000:1000 a /a", /COPY --chown=1000:1000: give a user name/);
    refused("FROM base\nCOPY --chmod=u+x a /a", /COPY --chmod=u\+x: give an octal mode/);
    refused("FROM base\nCOPY --link a /a", /COPY --link is not supported/);
    refused("FROM base\nCOPY --from=build /a /a", /COPY --from is not supported/);
    refused("FROM base\nCOPY *.py /app/", /wildcards are not supported/);
    refused("FROM base\nCOPY a b /app", /destination folder ending in '\/'/);
    refused("FROM base\nCOPY ../secret /s", /outside the build context/);
    refused("FROM base\nCOPY a /a", /COPY needs a build context/, null);
    refused(
      "FROM base\nRUN --mount=type=cache,target=/root/.cache pip install x",
      /RUN --mount is not supported/,
    );
    refused("FROM base\nRUN <<EOF\necho hi\nEOF", /heredocs are not supported/);
    refused("FROM base\nUSER user:group", /USER with a group is not supported/);
    refused("FROM base\nUSER 'a b'", /is not a user name/);
    refused("FROM base\nENV 1A=x", /ENV '1A' is not a variable name/);
    refused("FROM base\nENV A", /ENV A needs a value/);
    refused('FROM base\nENV A="open', /unterminated double quote/);
    refused("FROM base\nENV A=${B", /unterminated variable substitution/);
    refused('FROM base\nSHELL ["/bin/zsh"]', /SHELL is not supported/);
    refused("FROM base\nVOLUME /data", /VOLUME is not supported/);
    refused("FROM base\nFROB x", /line 2: unknown instruction 'FROB'/);
    refused("# escape=`\nFROM base", /only the default escape character/);
    refused("FROM base\nHEALTHCHECK CMD true", /HEALTHCHECK but no CMD or ENTRYPOINT/);
    refused(`FROM base\nRUN ${"x".repeat(300 * 1024)}`, /larger than 262144 bytes/);
  });

  it("gives an instruction the line it starts on, across continuations and blank lines", () => {
    refused("FROM base\n\nRUN a \\\n  b\n\nBOGUS", /^Dockerfile line 6: unknown instruction/);
    assert.deepEqual(steps("FROM base\r\nRUN a \\\r\n  b\r\n"), [["RUN", "a   b"]]);
  });
});
