import Testing

@testable import LogPipe

@Suite struct BoundedChannelTests {
    @Test func sendSuspendsWhileFullAndResumesInOrder() async throws {
        let channel = BoundedChannel<Int>(capacity: 2)
        let sent = Counter()
        let producer = Task {
            for value in 0..<10 {
                try await channel.send(value)
                sent.add(1)
            }
            channel.finishProducer()
        }
        try await eventually { sent.current == 2 }
        // The third send must stay suspended: nobody receives.
        try await Task.sleep(for: .milliseconds(50))
        #expect(sent.current == 2)
        #expect(channel.bufferedCount == 2)

        var received: [Int] = []
        while let value = await channel.receive() {
            received.append(value)
            #expect(channel.bufferedCount <= 2)
        }
        #expect(received == Array(0..<10))
        try await producer.value
    }

    /// `tryReceive` never waits, takes in order, and makes room for a
    /// suspended sender just as `receive` does.
    @Test func tryReceiveTakesWhatIsQueuedAndWakesSenders() async throws {
        let channel = BoundedChannel<Int>(capacity: 1)
        #expect(channel.tryReceive() == nil)
        try await channel.send(1)
        let second = Task { try await channel.send(2) }  // suspends: the channel is full
        try await Task.sleep(for: .milliseconds(20))
        #expect(channel.tryReceive() == 1)
        try await second.value
        #expect(channel.tryReceive() == 2)
        #expect(channel.tryReceive() == nil)
        channel.finishProducer()
        #expect(channel.tryReceive() == nil)
        #expect(await channel.receive() == nil)
    }

    @Test func endsOnlyAfterEveryProducerFinished() async throws {
        let channel = BoundedChannel<Int>(capacity: 4, producers: 2)
        try await channel.send(1)
        channel.finishProducer()
        try await channel.send(2)
        #expect(await channel.receive() == 1)
        #expect(await channel.receive() == 2)
        let end = Task { await channel.receive() }
        try await Task.sleep(for: .milliseconds(20))
        channel.finishProducer()
        #expect(await end.value == nil)
    }

    @Test func closeFailsWaitingAndFutureSenders() async throws {
        let channel = BoundedChannel<Int>(capacity: 1)
        try await channel.send(1)
        let waiting = Task { try await channel.send(2) }
        try await Task.sleep(for: .milliseconds(20))
        channel.close()
        await #expect(throws: ChannelClosedError.self) { try await waiting.value }
        await #expect(throws: ChannelClosedError.self) { try await channel.send(3) }
    }

    @Test func cancellingAWaitingSenderRemovesItsElement() async throws {
        let channel = BoundedChannel<Int>(capacity: 1)
        try await channel.send(1)
        let waiting = Task { try await channel.send(2) }
        try await Task.sleep(for: .milliseconds(20))
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        channel.finishProducer()
        #expect(await channel.receive() == 1)
        #expect(await channel.receive() == nil)
    }
}
