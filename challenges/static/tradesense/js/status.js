// Pages without live figures (leaderboard) still keep the connection pill honest.
import { startPlainStream } from "./common.js";

startPlainStream();
