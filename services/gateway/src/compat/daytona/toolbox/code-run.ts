import { InvalidArgumentError } from "../../../errors.js";
import { words } from "./shell.js";

/**
 * Where the guest's Node runtime and bundled helpers sit inside a sandbox (the vmm binds them
 * read-only). The runtime carries its own loader and libraries, so it runs in any rootfs.
 */
const GUEST_NODE = [
  "/opt/dnah/node/lib/ld-linux-x86-64.so.2",
  "--library-path",
  "/opt/dnah/node/lib",
  "/opt/dnah/node/bin/node",
  "--no-warnings",
];
const CODE_RUNNER = "/opt/dnah/agent/code-runner.mjs";

export const CODE_LANGUAGES = ["python", "javascript", "typescript"] as const;
export type CodeLanguage = (typeof CODE_LANGUAGES)[number];

export function codeLanguage(value: string | undefined): CodeLanguage {
  const lang = (value ?? "python").toLowerCase();
  if ((CODE_LANGUAGES as readonly string[]).includes(lang)) return lang as CodeLanguage;
  throw new InvalidArgumentError(
    `unsupported language '${lang.slice(0, 32)}': use python, javascript or typescript`,
  );
}

/**
 * The command that runs a code snippet fed on stdin. Python reads the program from stdin
 * (`python3 -u -`); JavaScript and TypeScript go through the guest's code runner, which strips
 * TypeScript types and runs the result as a CommonJS module with `process.argv = [node, ...argv]`
 * (Daytona's layout).
 */
export function codeCommand(lang: CodeLanguage, argv: readonly string[]): string {
  if (lang === "python") return `exec ${words("python3", "-u", "-", ...argv)}`;
  return `exec ${words(...GUEST_NODE, CODE_RUNNER, lang, "--", ...argv)}`;
}
