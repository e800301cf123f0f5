#!/usr/bin/env node
// Runs the TypeScript CLI through tsx (the repo's runtime loader).
import { register } from "tsx/esm/api";

register();
await import("../src/main.ts");
