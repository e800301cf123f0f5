export { type DevStack, startDevStack } from "./stack.js";
