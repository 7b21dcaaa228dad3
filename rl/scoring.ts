// Scoring a batch of images with the run's reward: rewards/scorer.ts (worker pools for specs,
// the trainer's thread and device for main-thread rewards such as GPU models and service
// clients, per-part values for combined rewards, retries of dropped samples).

export { RewardScorer } from '../rewards/scorer.js';
export type { PartScores, Scored, ScorerOptions } from '../rewards/scorer.js';
