import { connect, type Socket } from "node:net";

/**
 * Host side of a hybrid vsock (Cloud Hypervisor's and vhost-device-vsock's, and the jail
 * runtime's emulation of it): connect to the VM's unix socket, send `CONNECT <port>\n`, read
 * one `OK <n>\n` line; what follows is the guest port's byte stream.
 */
export function dialVsock(socketPath: string, port: number, timeoutMs = 5_000): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let buf = Buffer.alloc(0);
    const fail = (err: Error) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    };
    const timer = setTimeout(
      () => fail(new Error(`vsock handshake timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > 64) fail(new Error("vsock handshake: reply line too long"));
        return;
      }
      const line = buf.subarray(0, nl).toString("latin1");
      if (!/^OK \d+$/.test(line)) {
        fail(new Error(`vsock handshake refused: ${JSON.stringify(line)}`));
        return;
      }
      clearTimeout(timer);
      sock.off("data", onData);
      sock.off("error", fail);
      sock.off("close", onClose);
      sock.pause();
      const rest = buf.subarray(nl + 1);
      if (rest.length > 0) sock.unshift(rest);
      resolve(sock);
    };
    const onClose = () => fail(new Error("vsock closed during handshake"));
    sock.on("connect", () => sock.write(`CONNECT ${port}\n`));
    sock.on("data", onData);
    sock.on("error", fail);
    sock.on("close", onClose);
  });
}
