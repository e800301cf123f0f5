export { configFromEnv, type LogLevel, type SchedulerConfig } from "./config.js";
export type { Clock, SnapshotClient, VmmClient, VmmClientFactory } from "./context.js";
export { createScheduler, type Scheduler, type SchedulerOverrides } from "./scheduler.js";
