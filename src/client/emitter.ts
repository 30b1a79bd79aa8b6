/** A tiny typed event emitter whose `on` returns its own unsubscribe function. */
export class Emitter<Events extends Record<string, (...args: never[]) => void>> {
  private readonly listeners = new Map<keyof Events, Set<Events[keyof Events]>>()

  on<K extends keyof Events>(event: K, listener: Events[K]): () => void {
    let set = this.listeners.get(event)
    if (!set) {
      set = new Set()
      this.listeners.set(event, set)
    }
    set.add(listener)
    return () => {
      set.delete(listener)
    }
  }

  emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    const set = this.listeners.get(event)
    if (!set) return
    for (const l of [...set]) {
      try {
        ;(l as (...a: Parameters<Events[K]>) => void)(...args)
      } catch (err) {
        // A throwing app listener must not break the engine's own bookkeeping.
        queueMicrotask(() => {
          throw err
        })
      }
    }
  }

  count<K extends keyof Events>(event: K): number {
    return this.listeners.get(event)?.size ?? 0
  }

  clear(): void {
    this.listeners.clear()
  }
}
