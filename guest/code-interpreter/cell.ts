/**
 * Turns one notebook cell of JavaScript or TypeScript into a script the JS kernel runs with
 * `vm.runInThisContext`. Pure: no I/O.
 *
 * What a cell may do, and how the rewrite keeps it working across cells:
 * - top-level `const`/`let`/`var`/`class` become global `var` bindings assigned in place, so
 *   later cells see them and re-running a cell does not fail with "already declared";
 * - top-level function declarations move to the script's top level (still hoisted, global);
 * - the body runs in an async arrow function, so top-level `await` works;
 * - static `import` becomes an awaited dynamic import through `__dnahImport`;
 * - the value of a final expression statement is the cell's result (awaited if a promise).
 */
import { type Node, parse } from "acorn";
import { transform } from "sucrase";

export type CellLanguage = "javascript" | "typescript";

/** The name the kernel defines for `import` statements: `(specifier) => Promise<module>`. */
export const IMPORT_HELPER = "__dnahImport";

export class CellSyntaxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SyntaxError";
  }
}

/** Strips TypeScript types (sucrase); JavaScript passes through unchanged. */
export function stripTypes(code: string, language: CellLanguage): string {
  if (language === "javascript") return code;
  try {
    return transform(code, { transforms: ["typescript"], disableESTransforms: true }).code;
  } catch (err) {
    throw new CellSyntaxError((err as Error).message);
  }
}

interface Edit {
  start: number;
  end: number;
  text: string;
}

// acorn's estree nodes, as far as the rewrite looks at them.
interface AnyNode extends Node {
  [key: string]: unknown;
}

/** Rewrites a (type-stripped) cell into a script; see the module comment. */
export function rewriteCell(code: string): string {
  let program: AnyNode;
  try {
    program = parse(code, {
      ecmaVersion: "latest",
      sourceType: "script",
      allowAwaitOutsideFunction: true,
      allowImportExportEverywhere: true,
      allowHashBang: true,
    }) as unknown as AnyNode;
  } catch (err) {
    throw new CellSyntaxError((err as Error).message);
  }
  const body = program.body as AnyNode[];
  const globals = new Set<string>();
  const hoisted: string[] = [];
  const edits: Edit[] = [];
  const src = (n: AnyNode): string => code.slice(n.start, n.end);

  body.forEach((stmt, i) => {
    const last = i === body.length - 1;
    const node = unwrapExport(stmt);
    switch (node.type) {
      case "VariableDeclaration": {
        const parts: string[] = [];
        for (const decl of node.declarations as AnyNode[]) {
          const id = decl.id as AnyNode;
          for (const name of patternNames(id)) globals.add(name);
          const init = decl.init as AnyNode | null;
          if (init) parts.push(`(${src(id)} = (${src(init)}))`);
          else if (node.kind !== "var" && id.type === "Identifier") parts.push(`(${src(id)} = undefined)`);
        }
        edits.push({
          start: stmt.start,
          end: stmt.end,
          text: parts.length ? `void (${parts.join(", ")});` : ";",
        });
        break;
      }
      case "FunctionDeclaration": {
        hoisted.push(src(node));
        edits.push({ start: stmt.start, end: stmt.end, text: blankKeepingLines(src(stmt)) });
        break;
      }
      case "ClassDeclaration": {
        const name = (node.id as AnyNode).name as string;
        globals.add(name);
        edits.push({ start: stmt.start, end: stmt.end, text: `${name} = ${src(node)};` });
        break;
      }
      case "ImportDeclaration": {
        edits.push({ start: stmt.start, end: stmt.end, text: importToAssignment(node, globals) });
        break;
      }
      case "ExpressionStatement": {
        // A lone string literal is a directive to the parser; as the last line it is a value.
        if (last)
          edits.push({
            start: stmt.start,
            end: stmt.end,
            text: `return (${src(node.expression as AnyNode)});`,
          });
        else if (stmt !== node) edits.push({ start: stmt.start, end: stmt.end, text: src(node) });
        break;
      }
      default:
        if (stmt !== node) edits.push({ start: stmt.start, end: stmt.end, text: src(node) });
    }
  });

  let out = code;
  for (const e of edits.sort((a, b) => b.start - a.start))
    out = out.slice(0, e.start) + e.text + out.slice(e.end);
  if (out.startsWith("#!")) out = `//${out.slice(2)}`;
  const decl = globals.size > 0 ? `var ${[...globals].join(", ")}; ` : "";
  // One line of prefix, so stack-trace line numbers match the cell's.
  return `${decl}(async () => {${out}\n})();\n${hoisted.join("\n")}\n`;
}

/** `export const x = 1` is taken as `const x = 1`; anything else is left as written. */
function unwrapExport(stmt: AnyNode): AnyNode {
  if (stmt.type === "ExportNamedDeclaration" && stmt.declaration) return stmt.declaration as AnyNode;
  if (stmt.type === "ExportDefaultDeclaration") {
    const d = stmt.declaration as AnyNode;
    if ((d.type === "FunctionDeclaration" || d.type === "ClassDeclaration") && d.id) return d;
  }
  return stmt;
}

function importToAssignment(node: AnyNode, globals: Set<string>): string {
  const from = JSON.stringify((node.source as AnyNode).value);
  const load = `(await ${IMPORT_HELPER}(${from}))`;
  const specs = node.specifiers as AnyNode[];
  if (specs.length === 0) return `void ${load};`;
  const namespace = specs.find((s) => s.type === "ImportNamespaceSpecifier");
  const parts: string[] = [];
  const fields: string[] = [];
  for (const s of specs) {
    const local = (s.local as AnyNode).name as string;
    globals.add(local);
    if (s.type === "ImportDefaultSpecifier") fields.push(`default: ${local}`);
    else if (s.type === "ImportSpecifier") {
      const imported = s.imported as AnyNode;
      const key = imported.type === "Identifier" ? (imported.name as string) : JSON.stringify(imported.value);
      fields.push(`${key}: ${local}`);
    }
  }
  if (namespace) {
    const ns = (namespace.local as AnyNode).name as string;
    parts.push(`(${ns} = ${load})`);
    if (fields.length > 0) parts.push(`({ ${fields.join(", ")} } = ${ns})`);
  } else parts.push(`({ ${fields.join(", ")} } = ${load})`);
  return `void (${parts.join(", ")});`;
}

/** Every name a binding pattern declares. */
export function patternNames(p: AnyNode): string[] {
  switch (p.type) {
    case "Identifier":
      return [p.name as string];
    case "ObjectPattern":
      return (p.properties as AnyNode[]).flatMap((prop) =>
        prop.type === "RestElement"
          ? patternNames(prop.argument as AnyNode)
          : patternNames(prop.value as AnyNode),
      );
    case "ArrayPattern":
      return (p.elements as (AnyNode | null)[]).flatMap((e) => (e ? patternNames(e) : []));
    case "RestElement":
      return patternNames(p.argument as AnyNode);
    case "AssignmentPattern":
      return patternNames(p.left as AnyNode);
    default:
      return [];
  }
}

function blankKeepingLines(text: string): string {
  return text.replace(/[^\n]/g, "");
}

/** The cell, ready for `vm.runInThisContext`. Throws CellSyntaxError for code that does not parse. */
export function compileCell(code: string, language: CellLanguage): string {
  return rewriteCell(stripTypes(code, language));
}
