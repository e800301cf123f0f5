export { configFromEnv, type LogLevel, type SchedulerConfig } from "./config.js";
export type { Clock, VmmClient, VmmClientFactory } from "./context.js";
export { createScheduler, type Scheduler, type SchedulerOverrides } from "./scheduler.js";
