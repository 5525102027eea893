// Starts and stops a real xlstmd for the JS tests, reading its addresses from the serving line.
'use strict';
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const BIN = process.env.XLSTMD_BIN_DIR;
const SHARED = process.env.XLSTMD_SHARED_DIR;

function goldenModel() {
  return path.join(SHARED, 'golden', 'xlstm-large-a1');
}

// A random model big enough that a reply takes a while on a CPU (several DOM updates).
function slowModel() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xlstmd-web-model-'));
  execFileSync(path.join(BIN, 'xlstm'), ['mkmodel', '--family', 'xlstm', '--embedding-dim', '512',
    '--num-blocks', '6', '--num-heads', '4', '--vocab', '257', '--seed', '1', '--out', dir,
    '--force'], { stdio: 'ignore' });
  return dir;
}

class Daemon {
  constructor(args, model) {
    this.args = args;
    this.model = model || goldenModel();
    this.log = '';
  }

  start() {
    const argv = ['--model', this.model, '--listen', '127.0.0.1:0', '--web-listen', '127.0.0.1:0',
      '--threads', '1', ...this.args];
    this.proc = spawn(path.join(BIN, 'xlstmd'), argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no serving line in 60 s\n' + this.log)), 60000);
      const onData = (d) => {
        this.log += d.toString();
        const listen = /\blisten=(\d+\.\d+\.\d+\.\d+:\d+)/.exec(this.log);
        const web = /\bweb=(\d+\.\d+\.\d+\.\d+:\d+)/.exec(this.log);
        if (listen && web && !this.grpc) {
          this.grpc = listen[1];
          this.web = 'http://' + web[1];
          const model = /serving model=(\S+)/.exec(this.log);
          this.modelName = path.basename(model[1]);
          clearTimeout(timer);
          resolve(this);
        }
      };
      this.proc.stdout.on('data', onData);
      this.proc.stderr.on('data', onData);
      this.proc.on('exit', (code) => {
        clearTimeout(timer);
        if (!this.grpc) reject(new Error(`xlstmd exited with ${code}\n${this.log}`));
      });
    });
  }

  async stop() {
    if (this.proc.exitCode !== null) return this.proc.exitCode;
    this.proc.kill('SIGTERM');
    return this.exited;
  }

  // The greedy reply of an independent gRPC client (xlstm chat) to one message in a new session.
  grpcReply(message, maxTokens) {
    return execFileSync(path.join(BIN, 'xlstm'), ['chat', '--server', this.grpc, '--message',
      message, '--max-tokens', String(maxTokens)]).toString().replace(/\n$/, '');
  }
}

module.exports = { Daemon, slowModel, goldenModel, BIN };
