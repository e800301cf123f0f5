import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { initTelemetry, type Telemetry } from "@dnah/platform";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { sandboxClient, startTestStack, type TestStack } from "./harness.js";

describe("trace context crosses gateway → scheduler → vmm", () => {
  const exporter = new InMemorySpanExporter();
  let telemetry: Telemetry;
  let s: TestStack;
  before(async () => {
    telemetry = initTelemetry("dnah-test", {}, [new SimpleSpanProcessor(exporter)]);
    // No warm pool: a create goes all the way to the vmm.
    s = await startTestStack({ DNAH_POOL_SIZE: "0" });
  });
  after(async () => {
    await s?.close();
    await telemetry?.shutdown();
  });

  test("one create is one trace", async () => {
    const client = sandboxClient(s);
    exporter.reset();
    const { sandbox } = await client.createSandbox({});
    await client.exec({ sandboxId: sandbox!.sandboxId, command: "true" });
    const spans = exporter.getFinishedSpans();
    const byName = (n: string) => spans.filter((x) => x.name === n);
    const gateway = byName("dnah.sandbox.v1.SandboxService/CreateSandbox")[0];
    assert.ok(gateway, `no gateway span in ${spans.map((x) => x.name).join(", ")}`);
    const traceId = gateway.spanContext().traceId;
    for (const name of [
      "dnah.scheduler.v1.SchedulerService/CreateSandbox",
      "dnah.vmm.v1.VmmService/CreateVm",
    ]) {
      const found = byName(name);
      assert.ok(found.length > 0, `no span ${name}`);
      assert.ok(
        found.every((x) => x.spanContext().traceId === traceId),
        `${name} is in another trace`,
      );
    }
    // The exec's call to the agent is a child span of the gateway's Exec span.
    const exec = byName("dnah.sandbox.v1.SandboxService/Exec")[0];
    const toAgent = byName("process.Process/Start")[0];
    assert.ok(exec && toAgent);
    assert.equal(toAgent.spanContext().traceId, exec.spanContext().traceId);
  });
});
