/**
 * A token bucket: holds at most `burst` tokens and refills `ratePerS` a second. A rate of 0
 * means no limit (every take succeeds). `now` is performance.now() milliseconds.
 */
export class TokenBucket {
  private tokens: number
  private at: number

  constructor(
    readonly ratePerS: number,
    private readonly burst: number,
    now = performance.now(),
  ) {
    this.tokens = burst
    this.at = now
  }

  /** Takes `n` tokens when the bucket holds them; false (nothing taken) otherwise. */
  take(n = 1, now = performance.now()): boolean {
    if (this.ratePerS === 0) return true
    this.refill(now)
    if (this.tokens < n) return false
    this.tokens -= n
    return true
  }

  /** True when the bucket is full again: nothing taken lately, so it can be forgotten. */
  full(now = performance.now()): boolean {
    this.refill(now)
    return this.tokens >= this.burst
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.ratePerS)
    this.at = now
  }
}
